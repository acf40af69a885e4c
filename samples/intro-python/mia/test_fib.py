import pytest

from fib import fib


@pytest.mark.parametrize(("n", "expected"), [(0, 0), (1, 1), (2, 1), (10, 55), (30, 832040)])
def test_known_values(n, expected):
    assert fib(n) == expected


def test_negative():
    with pytest.raises(ValueError):
        fib(-1)

"""Iterative Fibonacci (see NOTES.md for the complexity analysis)."""


def fib(n: int) -> int:
    if n < 0:
        raise ValueError(f"fib is not defined for negative n (got {n})")
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

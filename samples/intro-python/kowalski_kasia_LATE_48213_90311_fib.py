def fib(n):
    """n-th Fibonacci number, fib(0) = 0."""
    if n < 0:
        raise ValueError("negative n")
    a, b = 0, 1
    i = 0
    while i < n:
        a, b = b, a + b
        i += 1
    return a


assert [fib(k) for k in range(8)] == [0, 1, 1, 2, 3, 5, 8, 13]

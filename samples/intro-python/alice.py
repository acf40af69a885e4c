"""Assignment 3: iterative Fibonacci.

fib(n) walks up from the two base cases, keeping only the last two values.

Time complexity: the loop body runs n - 1 times and each step is a constant amount of
work (one addition and two assignments), so the running time is O(n). Only two variables
are stored no matter how large n is, so the extra memory is O(1). (Python integers grow
with the size of the result, so for very large n each addition gets a bit slower, but
counting additions it is linear.)
"""


def fib(n: int) -> int:
    """Return the n-th Fibonacci number, with fib(0) = 0 and fib(1) = 1."""
    if n < 0:
        raise ValueError("n must be non-negative")
    if n < 2:
        return n
    prev, curr = 0, 1
    for _ in range(n - 1):
        prev, curr = curr, prev + curr
    return curr


if __name__ == "__main__":
    for i in range(10):
        print(i, fib(i))

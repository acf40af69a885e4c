# Bob - assignment 3

def fib(n):
    # base cases
    if n == 0:
        return 0
    if n == 1:
        return 1
    return fib(n - 1) + fib(n - 2)

# this is O(n) because we call fib once for every number below n

print(fib(10))

def fib(n):
    if n == 0:
        return 0
    last_two = [0, 1]
    for step in range(n - 1):
        last_two = [last_two[1], last_two[0] + last_two[1]]
    return last_two[1]


for n in (0, 1, 2, 10, 20):
    print(f"fib({n}) = {fib(n)}")

"""Lambdas and closures sharing a cell: pickle refuses lambdas, dill copies the cell apart."""

SETUP = """
def s02_make():
    count = 0
    def inc():
        nonlocal count
        count += 1
        return count
    return inc, lambda: count
s02_inc, s02_peek = s02_make()
s02_inc(); s02_inc()
s02_square = lambda v: v * v
"""
FINGERPRINT = "(s02_peek(), s02_inc(), s02_peek(), s02_square(9))"
MUTATE = "[s02_inc() for _ in range(5)]; s02_square = lambda v: -v"

"""A generator over `random`, mid-iteration: not picklable at all."""

SETUP = """
import random
def s01_draws():
    rng = random.Random(7)
    while True:
        yield rng.random()
s01_gen = s01_draws()
[next(s01_gen) for _ in range(5)]
"""
FINGERPRINT = "[next(s01_gen) for _ in range(3)]"
MUTATE = "[next(s01_gen) for _ in range(10)]"

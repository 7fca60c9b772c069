"""The `random` module's global Mersenne Twister state."""

SETUP = """
import random
random.seed(99)
[random.random() for _ in range(11)]
"""
FINGERPRINT = "[random.randint(0, 10**9) for _ in range(3)]"
MUTATE = "random.seed(1)"

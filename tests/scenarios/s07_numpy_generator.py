"""numpy's random Generator state (PCG64), mid-stream."""

SETUP = """
import numpy as np
s07_rng = np.random.default_rng(1234)
s07_rng.random(17)
"""
FINGERPRINT = "s07_rng.random(4).round(12).tolist()"
MUTATE = "s07_rng.random(1000)"

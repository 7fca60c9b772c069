"""A caught exception with its traceback and the live frames it holds."""

SETUP = """
import sys
def s25_fail(depth):
    marker = f"depth {depth}"
    if depth == 0:
        raise ValueError("deep")
    s25_fail(depth - 1)
try:
    s25_fail(3)
except ValueError:
    s25_exc = sys.exc_info()[1]
"""
FINGERPRINT = "(str(s25_exc), s25_exc.__traceback__.tb_next.tb_next.tb_frame.f_locals['marker'])"
MUTATE = "s25_exc = KeyError('other'); s25_exc.__traceback__ = None"

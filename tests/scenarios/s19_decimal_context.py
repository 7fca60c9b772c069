"""decimal's (C, thread-local) context: precision and rounding."""

SETUP = """
import decimal
decimal.getcontext().prec = 7
decimal.getcontext().rounding = decimal.ROUND_DOWN
"""
FINGERPRINT = "(str(decimal.Decimal(1) / decimal.Decimal(7)), decimal.getcontext().rounding)"
MUTATE = "decimal.getcontext().prec = 40; decimal.getcontext().rounding = decimal.ROUND_UP"

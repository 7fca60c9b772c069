"""functools.lru_cache's (C) cache contents and statistics."""

SETUP = """
import functools
@functools.lru_cache(maxsize=128)
def s24_fib(n):
    return n if n < 2 else s24_fib(n - 1) + s24_fib(n - 2)
s24_fib(30)
"""
FINGERPRINT = "tuple(s24_fib.cache_info())"
MUTATE = "s24_fib.cache_clear(); s24_fib(10)"

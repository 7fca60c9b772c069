"""A coroutine suspended mid-body, driven by hand."""

SETUP = """
import types
@types.coroutine
def s16_yield(v):
    return (yield v)
async def s16_job():
    total = 0
    for i in range(10):
        total += await s16_yield(i)
    return total
s16_coro = s16_job()
s16_coro.send(None); s16_coro.send(5); s16_coro.send(5)
"""
FINGERPRINT = (
    "(s16_coro.cr_frame.f_locals['total'], s16_coro.cr_frame.f_locals['i'], s16_coro.send(1))"
)
MUTATE = "[s16_coro.send(100) for _ in range(3)]"

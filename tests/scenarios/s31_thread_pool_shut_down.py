"""A ThreadPoolExecutor alive at the snapshot and shut down since: its worker
threads ended. After the restore the pool takes and completes new work."""

SETUP = """
import threading
from concurrent.futures import ThreadPoolExecutor
s31_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="s31")
s31_gate = threading.Barrier(3)
s31_warm = [s31_pool.submit(s31_gate.wait, 10) for _ in range(2)]
s31_gate.wait(10)
[f.result(10) for f in s31_warm]
"""
FINGERPRINT = "([s31_pool.submit(pow, 2, i).result(10) for i in range(5)], len(s31_pool._threads))"
MUTATE = "s31_pool.shutdown(wait=True)"

"""A multiprocessing Pool whose worker processes ended after the snapshot
(terminate()): processes cannot come back, but the restored Pool notices they are
gone, starts new workers and completes new work, instead of waiting forever."""

# transplant mode (test_fidelity.py): its worker processes are children: a snapshot with children cannot move into a new process (refused)
MOVES = False
SETUP = """
import multiprocessing
s38_pool = multiprocessing.get_context("fork").Pool(2)
s38_pool.map(abs, [-1])
"""
FINGERPRINT = "s38_pool.map_async(abs, [-1, -2, -3]).get(30)"
MUTATE = "s38_pool.terminate(); s38_pool.join()"

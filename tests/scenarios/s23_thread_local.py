"""threading.local values, per thread, and a thread that keeps its own."""

SETUP = """
import threading
s23_local = threading.local()
s23_local.v = "main"
s23_seen = []
s23_go = threading.Event()
def s23_worker():
    s23_local.v = "worker"
    while True:
        s23_go.wait(); s23_go.clear()
        s23_seen.append(s23_local.v)
s23_thread = threading.Thread(target=s23_worker, daemon=True, name="s23")
s23_thread.start()
"""
FINGERPRINT = "(s23_local.v, s23_thread.is_alive(), len(s23_seen))"
MUTATE = "s23_local.v = 'changed'; s23_go.set(); import time; time.sleep(0.2)"

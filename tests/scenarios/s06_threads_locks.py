"""A thread blocked on a lock the main thread holds, and a counter it guards."""

SETUP = """
import threading
s06_lock = threading.Lock()
s06_done = []
s06_never = threading.Event()
s06_lock.acquire()
def s06_wait():
    with s06_lock:
        s06_done.append("got it")
    s06_never.wait()
s06_thread = threading.Thread(target=s06_wait, name="s06", daemon=True)
s06_thread.start()
"""
FINGERPRINT = "(s06_lock.locked(), s06_thread.is_alive(), list(s06_done))"
MUTATE = "s06_lock.release(); import time; time.sleep(0.2)"

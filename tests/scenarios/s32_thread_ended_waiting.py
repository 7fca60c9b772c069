"""Threads waiting on a Condition and on a Queue at the snapshot, ended since: after
the restore they wait again and answer with the right token."""

SETUP = """
import threading, queue
s32_cond = threading.Condition()
s32_items = []
s32_q = queue.Queue()
s32_out = queue.Queue()
def s32_cond_worker():
    while True:
        with s32_cond:
            while not s32_items:
                s32_cond.wait()
            item = s32_items.pop(0)
        if item == "exit":
            return
        s32_out.put(("cond", item))
def s32_queue_worker():
    while (item := s32_q.get()) != "exit":
        s32_out.put(("queue", item))
s32_threads = [threading.Thread(target=f, daemon=True, name=f.__name__)
               for f in (s32_cond_worker, s32_queue_worker)]
for t in s32_threads:
    t.start()
def s32_ask(token):
    with s32_cond:
        s32_items.append(token)
        s32_cond.notify()
    s32_q.put(token)
    return sorted(s32_out.get(timeout=10) for _ in range(2))
"""
FINGERPRINT = "([t.is_alive() for t in s32_threads], s32_ask('ping'))"
MUTATE = """
with s32_cond:
    s32_items.append("exit")
    s32_cond.notify()
s32_q.put("exit")
for t in s32_threads:
    t.join(10)
"""

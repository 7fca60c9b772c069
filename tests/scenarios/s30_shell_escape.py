"""A shell escape after the snapshot: IPython stops its history thread before every
fork and starts a new one after, so a thread of the snapshot has ended since."""

BACK_AND_FORTH = True
SETUP = """
import threading
s30_seen = ["before"]
def s30_threads():
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith("Dummy"))
"""

BACK_AND_FORTH = True
FINGERPRINT = "(list(s30_seen), len(s30_threads()))"
MUTATE = "s30_seen.append(get_ipython().getoutput('echo after')[0])"

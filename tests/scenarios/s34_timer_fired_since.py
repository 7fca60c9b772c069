"""An interval timer with time left at the snapshot, disarmed since: the restore arms
it again with the time it had left."""

SETUP = """
import signal
s34_hits = []
signal.signal(signal.SIGPROF, lambda *a: s34_hits.append(1))
signal.setitimer(signal.ITIMER_PROF, 600, 600)
"""
FINGERPRINT = "tuple(v > 500 for v in signal.getitimer(signal.ITIMER_PROF))"
MUTATE = "signal.setitimer(signal.ITIMER_PROF, 0)"

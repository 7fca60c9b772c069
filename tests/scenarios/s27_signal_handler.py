"""A Python signal handler: its Python side and the kernel's disposition."""

SETUP = """
import signal, os
s27_hits = []
signal.signal(signal.SIGUSR2, lambda *a: s27_hits.append(1))
def s27_fire():
    os.kill(os.getpid(), signal.SIGUSR2)
    import time; time.sleep(0.05)
    return len(s27_hits)
"""
FINGERPRINT = "(signal.getsignal(signal.SIGUSR2) is not signal.SIG_IGN, s27_fire())"
MUTATE = "signal.signal(signal.SIGUSR2, signal.SIG_IGN); s27_hits.clear()"

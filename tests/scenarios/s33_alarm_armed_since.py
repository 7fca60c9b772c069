"""signal.alarm() armed after the snapshot, with SIGALRM's default action (end the
process): the restore must disarm it, or the kernel dies a second later."""

SETUP = """
import signal
signal.alarm(0)
"""
FINGERPRINT = "(signal.getitimer(signal.ITIMER_REAL)[0] > 0, signal.getsignal(signal.SIGALRM))"
MUTATE = "signal.alarm(1)"

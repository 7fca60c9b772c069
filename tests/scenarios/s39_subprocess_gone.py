"""A subprocess running at the snapshot, killed and reaped since: the restored
Popen object believes it runs; waiting for it must return, not hang."""

# transplant mode (test_fidelity.py): a running child: a snapshot with children cannot move into a new process (refused)
MOVES = False
SETUP = """
import subprocess
s39_proc = subprocess.Popen(["sleep", "600"])
"""
FINGERPRINT = "(s39_proc.returncode, s39_proc.args)"
MUTATE = "s39_proc.kill(); s39_proc.wait(10)"

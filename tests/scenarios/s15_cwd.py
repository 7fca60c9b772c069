"""The working directory (kernel state, not Python state)."""

SETUP = """
import os, tempfile
s15_home = tempfile.mkdtemp(prefix="s15-")
os.chdir(s15_home)
"""
FINGERPRINT = "(os.getcwd() == s15_home, os.path.exists('marker'))"
MUTATE = "os.chdir('/')"

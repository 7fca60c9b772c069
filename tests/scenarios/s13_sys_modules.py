"""sys.modules after imports: modules imported later are gone again."""

SETUP = """
import sys
s13_before = len(sys.modules)
"""
FINGERPRINT = "(len(sys.modules) == s13_before, 'fractions' in sys.modules, 'this' in sys.modules)"
MUTATE = "import fractions, statistics, email.mime.text"

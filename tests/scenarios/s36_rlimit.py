"""A resource limit lowered after the snapshot (soft limit of open files)."""

SETUP = """
import resource
s36_soft, s36_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (s36_soft - 1, s36_hard))
"""
FINGERPRINT = "resource.getrlimit(resource.RLIMIT_NOFILE) == (s36_soft - 1, s36_hard)"
MUTATE = "resource.setrlimit(resource.RLIMIT_NOFILE, (s36_soft - 2, s36_hard))"

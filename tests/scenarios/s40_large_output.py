"""A large output after the snapshot: the first one over 64 KiB makes pyzmq start a
garbage-collector thread and a context with its own threads. Going back ends them;
going forward again needs them."""

BACK_AND_FORTH = True
SETUP = """
import threading
s40_state = ["before"]
"""
FINGERPRINT = "(list(s40_state), threading.active_count())"
MUTATE = "print('x' * 200_000, end=''); s40_state.append('after')"

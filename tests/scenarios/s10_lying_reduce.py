"""An object whose __reduce__ lies: pickling-based tools restore something else."""

SETUP = """
class S10:
    def __init__(self):
        self.secret = [1, 2, 3]
    def __reduce__(self):
        return (S10, ())  # drops the state it claims to save
s10 = S10()
s10.secret.append(4)
"""
FINGERPRINT = "s10.secret"
MUTATE = "s10.secret = ['mutated']"

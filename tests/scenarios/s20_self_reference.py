"""Cycles and shared references: identity must survive, not just equality."""

SETUP = """
s20_a = [1, 2]
s20_a.append(s20_a)
s20_shared = {"k": [0]}
s20_twins = (s20_shared["k"], s20_shared["k"])
s20_ids = (id(s20_a), id(s20_shared))
"""
FINGERPRINT = "(s20_a[2] is s20_a, s20_twins[0] is s20_twins[1] is s20_shared['k'], (id(s20_a), id(s20_shared)) == s20_ids, list(s20_shared['k']))"
MUTATE = "s20_a.pop(); s20_shared['k'] = [9]; s20_shared['k'].append(1)"

"""itertools iterators mid-way: count, cycle, islice over a generator, groupby."""

SETUP = """
import itertools
s08_count = itertools.count(10, 3)
s08_cycle = itertools.cycle("abc")
s08_slice = itertools.islice((i * i for i in range(100)), 5, None)
s08_groups = itertools.groupby("aaabbbcccddd")
[next(s08_count) for _ in range(4)]; next(s08_cycle); next(s08_slice); next(s08_groups)
"""
FINGERPRINT = "(next(s08_count), next(s08_cycle), next(s08_slice), next(s08_groups)[0])"
MUTATE = "[next(s08_count) for _ in range(7)]; next(s08_cycle); next(s08_slice); next(s08_groups)"

"""Pure: the namespace summary recorded at each snapshot, and diffs of two summaries."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from jupyter_chkpt import namespace


class Hostile:
    """Everything a user's object may do wrong when looked at (a lazy query's len runs
    the query): it notes each call it gets."""

    calls: ClassVar[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        Hostile.calls.append(name)
        raise RuntimeError(f"no {name}")

    def __len__(self) -> int:
        Hostile.calls.append("__len__")
        return 1

    def __repr__(self) -> str:
        Hostile.calls.append("__repr__")
        return "slow"


class RaisingProperty:
    @property
    def shape(self) -> Any:
        raise ValueError("no shape")


def test_odd_objects_are_summarized_without_calling_them() -> None:
    ns = {
        "hostile": Hostile(),
        "prop": RaisingProperty(),
        "huge_values": {"a": "x" * 50_000_000, "b": 1},  # its repr would be 50 MB
        "subclass": np.zeros(4_000_000).view(np.recarray),  # not sampled: not a plain array
        "strided": np.zeros((100, 100))[:, ::2],
        "frame": pd.DataFrame({"a": range(1000)}),
        "n": 3,
        "_private": 1,
        "np": np,
    }
    out = namespace.summarize(ns)
    assert Hostile.calls == []
    got = out["vars"]
    assert set(got) == {"hostile", "prop", "huge_values", "subclass", "strided", "frame", "n"}
    assert got["huge_values"][2] is None  # not shown: too big
    assert got["n"] == ["int", 28, "3", got["n"][3]]
    assert got["frame"][0] == "pandas.DataFrame" and got["frame"][1] >= 8000
    assert out["more"] == 0


def test_a_diff_sees_rebinding_value_and_sampled_data_changes() -> None:
    big = np.zeros(1 << 20)
    a = namespace.summarize({"big": big, "s": "a", "gone": 1, "same": (1, 2)})
    big[0] = 1  # in place, within the sampled head
    b = namespace.summarize({"big": big, "s": "b", "new": [1], "same": (1, 2)})
    d = namespace.diff(a, b)
    assert [v["name"] for v in d["added"]] == ["new"]
    assert [v["name"] for v in d["removed"]] == ["gone"]
    assert [c["name"] for c in d["changed"]] == ["big", "s"]
    assert d["same"] == 1 and d["incomplete"] is False
    assert namespace.diff(None, b)["added"] and namespace.diff(a, a)["changed"] == []


def test_limits_are_counted_not_silently_dropped() -> None:
    ns = {f"v{i}": i for i in range(namespace.MAX_NAMES + 5)}
    out = namespace.summarize(ns)
    assert len(out["vars"]) == namespace.MAX_NAMES and out["more"] == 5
    assert namespace.diff(out, out)["incomplete"] is True

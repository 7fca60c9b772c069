"""Snapshot references and labels (refs.py): one syntax, one minimum prefix, and the store agrees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from test_store import image, make_meta, make_store

from jupyter_chkpt import refs
from jupyter_chkpt.errors import AmbiguousSnapshot, BadRequest, UnknownSnapshot


@dataclass
class Snap:
    id: str
    label: str = ""


SNAPS = [Snap("bccca9b9", "B"), Snap("bccd0001"), Snap("0123abcd", "start"), Snap("77770000")]


def test_a_label_that_is_also_an_id_prefix_is_matched_once() -> None:
    assert refs.resolve(SNAPS, "B", where="here") is SNAPS[0]  # was "matches bccca9b9, bccca9b9"
    assert refs.resolve(SNAPS, "start", where="here") is SNAPS[2]
    assert refs.resolve(SNAPS, "0123", where="here") is SNAPS[2]
    assert refs.resolve(SNAPS, "BCCD", where="here") is SNAPS[1]  # hex: either case
    assert refs.resolve(SNAPS, "-1", where="here") is SNAPS[-1]
    with pytest.raises(AmbiguousSnapshot, match="is the start of ids bccca9b9, bccc0000"):
        refs.resolve([*SNAPS, Snap("bccc0000")], "bccc", where="here")


@pytest.mark.parametrize("short", ["b", "bc", "bcc", "7", "777"])
def test_prefixes_shorter_than_the_minimum_name_nothing(short: str) -> None:
    assert len(short) < refs.MIN_PREFIX
    with pytest.raises(UnknownSnapshot, match=f"at least its first {refs.MIN_PREFIX} characters"):
        refs.resolve(SNAPS, short, where="here")


@pytest.mark.parametrize("empty", ["", None, 7])
def test_an_empty_or_non_string_reference_is_an_error_never_everything(empty: object) -> None:
    with pytest.raises(BadRequest):
        refs.check_ref(empty)
    with pytest.raises(BadRequest, match="no snapshot given"):
        refs.resolve(SNAPS, "", where="here")
    unlabelled = [Snap("aaaa0000"), Snap("bbbb0000")]
    with pytest.raises(BadRequest):
        refs.resolve(unlabelled, "", where="here")  # was: matched every unlabelled snapshot


@pytest.mark.parametrize(
    ("label", "says"),
    [
        ("dead", "looks like a snapshot id"),
        ("DEADBEEF", "looks like a snapshot id"),
        ("0123abcd", "looks like a snapshot id"),
        ("-1", "looks like -N"),
        ("x" * (refs.MAX_LABEL + 1), "too long"),
        ("tab\there", "control characters"),
        (3, "must be a string"),
    ],
)
def test_labels_that_would_read_as_references_are_refused_with_a_remedy(
    label: object, says: str
) -> None:
    with pytest.raises(BadRequest, match=says) as e:
        refs.check_label(label)
    assert "neither 4 to 8 hex digits nor -N" in e.value.remedy


@pytest.mark.parametrize("label", ["", "B", "abc", "deadbeef0", "clean state", "v2", "x" * 200])
def test_ordinary_labels_are_taken(label: str) -> None:
    assert refs.check_label(label) == label


def test_the_store_and_refs_share_the_minimum_prefix(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    assert store.resolve(info.id[: refs.MIN_PREFIX]) == info.id
    assert refs.resolve(store.list(), info.id[: refs.MIN_PREFIX], where="s").id == info.id
    short = info.id[: refs.MIN_PREFIX - 1]
    with pytest.raises(AmbiguousSnapshot, match=f"at least {refs.MIN_PREFIX} characters"):
        store.resolve(short)
    with pytest.raises(UnknownSnapshot):
        refs.resolve(store.list(), short, where="s")
    for empty in ("", "  "):
        with pytest.raises(UnknownSnapshot, match="no snapshot given"):
            store.resolve(empty)

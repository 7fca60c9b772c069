"""Snapshot references and labels: one syntax for the CLI, the helper, the kernel and REST.

A reference is, tried in this order: an exact id; `-N`, the N-th newest (where
the snapshots of one process are meant); an exact label; a unique id prefix of
at least 4 characters. A label that could be read as an id (4 to 8 hex digits)
or as `-N` is refused when it is set, so the order rarely matters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Protocol, TypeVar

from .errors import AmbiguousSnapshot, BadRequest, UnknownSnapshot

MAX_LABEL = 200  # characters
MAX_REF = MAX_LABEL  # a reference longer than any label names nothing
MIN_PREFIX = 4
ID_LIKE = re.compile(r"[0-9a-fA-F]{4,8}")
NEWEST = re.compile(r"-[0-9]+")

LABEL_RULES = (
    f"A label is at most {MAX_LABEL} characters without control characters, and neither "
    "4 to 8 hex digits nor -N (those name snapshots by id and by age)"
)


class Named(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def label(self) -> str: ...


S = TypeVar("S", bound=Named)


def check_label(label: object) -> str:
    """`label` if it may be set ("" removes a label); BadRequest otherwise."""
    if not isinstance(label, str):
        raise BadRequest(f"a label must be a string, not {type(label).__name__}", LABEL_RULES)
    if len(label) > MAX_LABEL:
        raise BadRequest(f"a label of {len(label)} characters is too long", LABEL_RULES)
    if any(unicodedata.category(c) == "Cc" for c in label):
        raise BadRequest(f"the label {label!r} holds control characters", LABEL_RULES)
    if ID_LIKE.fullmatch(label):
        raise BadRequest(f"the label {label!r} looks like a snapshot id", LABEL_RULES)
    if NEWEST.fullmatch(label):
        raise BadRequest(f"the label {label!r} looks like -N (the N-th newest)", LABEL_RULES)
    return label


def check_ref(ref: object) -> str:
    """`ref` if it is a reference at all; BadRequest otherwise."""
    rules = f"Give an id, a unique id prefix of at least {MIN_PREFIX} characters, a label, or -N"
    if not isinstance(ref, str):
        raise BadRequest(f"a snapshot reference must be a string, not {type(ref).__name__}", rules)
    if not ref:
        raise BadRequest("no snapshot given", rules)
    if len(ref) > MAX_REF:
        raise BadRequest(f"a snapshot reference of {len(ref)} characters is too long", rules)
    return ref


def resolve(
    snaps: Sequence[S], ref: str, *, where: str, newest: bool = True, listing: str = ""
) -> S:
    """The snapshot of `snaps` (oldest first) that `ref` names. `where` names the
    set in messages ("this kernel", "PID 42"); `newest`: whether -N is meaningful
    here; `listing` says how to list them, for remedies."""
    check_ref(ref)
    see = f"; {listing} lists them" if listing else ""
    if NEWEST.fullmatch(ref):
        if not newest:
            raise BadRequest(
                f"{ref}: -N counts the snapshots of one process",
                "Give an id, a unique id prefix or a label here",
            )
        n = int(ref[1:])
        if not 1 <= n <= len(snaps):
            raise UnknownSnapshot(
                f"{ref}: {where} has {len(snaps)} snapshot(s)",
                "Use -1 for the newest, -2 for the one before, ...",
            )
        return snaps[-n]
    key = ref.lower()
    exact = [s for s in snaps if s.id == key]
    if exact:
        return exact[0]
    labelled = [s for s in snaps if s.label == ref]
    if len(labelled) == 1:
        return labelled[0]
    if labelled:
        raise AmbiguousSnapshot(
            f"{ref!r} is the label of snapshots {', '.join(s.id for s in labelled)}",
            f"Several snapshots have that label: give an id{see}",
        )
    if len(key) >= MIN_PREFIX:
        prefixed = [s for s in snaps if s.id.startswith(key)]
        if len(prefixed) == 1:
            return prefixed[0]
        if prefixed:
            raise AmbiguousSnapshot(
                f"{ref!r} is the start of ids {', '.join(s.id for s in prefixed)}",
                "Give more characters of the snapshot id",
            )
    raise UnknownSnapshot(
        f"{where} has no snapshot with id or label {ref!r}",
        f"Give the label, the id or at least its first {MIN_PREFIX} characters{see}",
    )

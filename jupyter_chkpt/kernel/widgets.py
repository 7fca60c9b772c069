"""The %snapshots browser: the tree, with Restore, Delete and Label buttons."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from ..errors import ChkptError
from . import tree
from .controller import Checkpointer


class SnapshotBrowser(w.VBox):
    def __init__(self, ctl: Checkpointer, snapshots: list[dict[str, Any]], live: str | None):
        self.ctl = ctl
        self.snapshots = snapshots
        self.live = live
        self.rows = w.Select(layout=w.Layout(width="100%", font_family="monospace"), rows=8)
        self.label = w.Text(placeholder="label", layout=w.Layout(width="16em"))
        self.message = w.HTML()
        buttons = []
        for name, action, style in (
            ("Restore", self._restore, "warning"),
            ("Delete", self._delete, "danger"),
            ("Label", self._label, ""),
        ):
            b = w.Button(description=name, button_style=style)
            b.on_click(lambda _, act=action: self._guard(act))
            buttons.append(b)
        self._fill()
        super().__init__([self.rows, w.HBox([*buttons, self.label]), self.message])

    def _fill(self) -> None:
        lines = tree.render(self.snapshots, self.live).splitlines()
        ids = [s["id"] for _, _, s in tree.ordered(self.snapshots)]
        self.rows.options = list(zip(lines, ids, strict=True)) if ids else [(lines[0], "")]

    def _selected(self) -> str:
        if not self.rows.value:
            raise ChkptError("no snapshot selected", "Click one in the list first")
        return str(self.rows.value)

    def _guard(self, action: Any) -> None:
        try:
            action()
        except ChkptError as e:
            self.message.value = f"<b>error:</b> {e}"

    def _refresh(self) -> None:
        listing = self.ctl.call("list")
        self.snapshots, self.live = listing["snapshots"], listing["kernel"]["live"]
        self._fill()

    def _restore(self) -> None:
        snap = self._selected()
        self.message.value = (
            f"restoring {snap}… (this browser belongs to the state you leave: "
            "run %snapshots again afterwards)"
        )
        self.ctl.restore_soon(snap)

    def _delete(self) -> None:
        snap = self._selected()
        self.ctl.call("delete", snapshot=snap)
        self.message.value = f"deleted {snap}"
        self._refresh()

    def _label(self) -> None:
        snap = self._selected()
        self.ctl.call("label", snapshot=snap, label=self.label.value)
        self.message.value = f"labelled {snap}"
        self._refresh()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):  # where widgets do not render: the tree as text
            data["text/plain"] = tree.render(self.snapshots, self.live)
        return bundle

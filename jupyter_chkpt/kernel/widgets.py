"""The %snapshots browser: the tree, with Restore, Delete and Label buttons.

Its models live in the kernel. A frontend that reloads asks the kernel for them again,
which finds none once the kernel was restored to a snapshot taken before the browser
existed, or restarted: ipywidgets then shows "Error displaying widget: model not found"
(and never the bundle's text/plain). So each display of the browser comes with a
fallback output just before it: the tree as text and how to get a live browser again.
Its own CSS shows it, and hides the widget's output, only in an output area where no
live view of this browser is rendered; where that CSS is dropped (an untrusted
notebook, other frontends) the fallback stays hidden.
"""

from __future__ import annotations

import html
import secrets
from typing import Any

import ipywidgets as w
from IPython.display import display, update_display

from ..errors import ChkptError
from . import tree
from .controller import Checkpointer


class SnapshotBrowser(w.VBox):
    def __init__(self, ctl: Checkpointer, snapshots: list[dict[str, Any]], live: str | None):
        self.ctl = ctl
        self.snapshots = snapshots
        self.live = live
        token = secrets.token_hex(4)
        self._live_class, self._fallback_class = f"jp-chkpt-b-{token}", f"jp-chkpt-f-{token}"
        self._fallback_id: str | None = None  # the display id of the fallback, once shown
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
        self.add_class(self._live_class)  # on the live view only: what the fallback's CSS looks for

    def _fill(self) -> None:
        lines = tree.render(self.snapshots, self.live).splitlines()
        ids = [s["id"] for _, _, s in tree.ordered(self.snapshots)]
        self.rows.options = list(zip(lines, ids, strict=True)) if ids else [(lines[0], "")]
        if self._fallback_id:
            update_display(self._fallback(), raw=True, display_id=self._fallback_id)

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
        self.ctl._changed("deleted", snap)
        self.message.value = f"deleted {snap}"
        self._refresh()

    def _label(self) -> None:
        snap = self._selected()
        self.ctl.call("label", snapshot=snap, label=self.label.value)
        self.ctl._changed("labelled", snap)
        self.message.value = f"labelled {snap}"
        self._refresh()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):  # where widgets do not render: the tree as text
            data["text/plain"] = tree.render(self.snapshots, self.live)
            if "application/vnd.jupyter.widget-view+json" in data:
                if self._fallback_id is None:
                    self._fallback_id = secrets.token_hex(8)
                display(self._fallback(), raw=True, display_id=self._fallback_id)
        return bundle

    def _fallback(self) -> dict[str, str]:
        """The output shown instead of the browser where its model is gone; hidden (CSS:
        the output area has no live view of this browser) otherwise."""
        gone = f".jp-OutputArea:not(:has(.{self._live_class}))"
        here = f".jp-OutputArea-child:has(.{self._fallback_class})"
        text = html.escape(tree.render(self.snapshots, self.live))
        return {
            "text/html": (
                f'<div class="jp-chkpt-fallback {self._fallback_class}" style="display:none">'
                "<p>This snapshot browser is no longer in the kernel (the kernel was restored "
                "to a snapshot taken before it, or restarted): run <code>%snapshots</code> "
                "again for a live one. The snapshots as it last showed them:</p>"
                f"<pre>{text}</pre></div>"
                f"<style>{gone} .{self._fallback_class} {{display: block !important}}"
                f" {gone} > {here} + .jp-OutputArea-child {{display: none}}"
                f" .jp-OutputArea:has(.{self._live_class}) > {here} {{display: none}}</style>"
            )
        }

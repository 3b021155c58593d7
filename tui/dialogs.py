"""Modal dialogs: yes/no confirmation, the "cannot use the hub" screen, and the small forms
that lead to one (push a bundle file, start a rollout), the `?` help and read-only texts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from tui.models import confirm as cm
from tui.models.rollout_fields import FieldError


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(Content(self.question), id="confirm-question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", variant="primary", id="confirm-yes")
                yield Button("No (n)", id="confirm-no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")


class TypedConfirmScreen(ModalScreen[bool]):
    """A confirmation that wants a number typed (the device count), not a y: for actions
    that override what the devices' sites asked for (``force-update``)."""

    BINDINGS = [Binding("escape", "answer(False)", "Cancel")]

    def __init__(self, question: str, expected: str) -> None:
        super().__init__()
        self.question = question
        self.expected = expected

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(Content(self.question), id="typed-question")
            yield Input(placeholder=f"type {self.expected}", id="typed-answer")
            yield Static("", id="typed-hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Input.Submitted, "#typed-answer")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.expected:
            self.dismiss(True)
        else:
            self.query_one("#typed-hint", Static).update(
                Content(f"not {event.value.strip()!r}: type {self.expected}, or Esc to cancel")
            )


class HubErrorScreen(ModalScreen[str]):
    """Shown instead of the fleet when the hub cannot be used (unreachable, key refused).

    Dismisses with "retry" or "quit"; the app decides what that means.
    """

    BINDINGS = [
        Binding("r", "choose('retry')", "Retry"),
        Binding("q,escape", "choose('quit')", "Quit"),
    ]

    def __init__(self, title: str, message: str, hint: str) -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="hub-error", classes="dialog"):
            yield Static(Content(self.title_text), id="hub-error-title")
            yield Static(Content(self.message), id="hub-error-message")
            yield Static(Content(self.hint), id="hub-error-hint")
            with Horizontal(classes="buttons"):
                yield Button("Retry (r)", variant="primary", id="hub-error-retry")
                yield Button("Quit (q)", id="hub-error-quit")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss("retry" if event.button.id == "hub-error-retry" else "quit")


class PushScreen(ModalScreen[str | None]):
    """Asks for a bundle file's path; dismisses with it, or None."""

    DEFAULT_CSS = """
    PushScreen { align: center middle; }
    PushScreen #push-path { margin: 1 0; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="push-dialog", classes="dialog"):
            yield Static(Content("Push a bundle file (YAML) to the hub"), id="push-title")
            yield Input(placeholder="path/to/bundle.yaml", id="push-path")
            with Horizontal(classes="buttons"):
                yield Button("Push", variant="primary", id="push-go")
                yield Button("Cancel (esc)", id="push-cancel")

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#push-path")
    @on(Button.Pressed, "#push-go")
    def _go(self) -> None:
        path = self.query_one("#push-path", Input).value.strip()
        if not path:
            self.notify("type the path of a bundle file", title="push", severity="warning")
            return
        self.dismiss(path)

    @on(Button.Pressed, "#push-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True)
class RolloutRequest:
    """What the rollout form asks ``rollouts.start`` for; ``None``: the hub's default."""

    bundle: str
    target: str
    phases: str | None = None
    bake: str | None = None
    max_failures: int | str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bundle": self.bundle, "target": self.target}
        for key in ("phases", "bake", "max_failures"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class RolloutStartScreen(ModalScreen[RolloutRequest | None]):
    """The rollout form: bundle@version, target, phases, bake time, failures tolerated.

    The fields are parsed by the CLI's own parsers (``tui.models.rollout_fields``, through
    ``cm.rollout_request``); a wrong one is named under the fields and focused. Dismisses
    with the request (the caller counts the devices and confirms) or None.
    """

    DEFAULT_CSS = """
    RolloutStartScreen { align: center middle; }
    RolloutStartScreen .field { height: 3; }
    RolloutStartScreen .field Label { width: 18; padding: 1 0 0 0; }
    RolloutStartScreen .field Input, RolloutStartScreen .field Select { width: 1fr; }
    RolloutStartScreen #rollout-error { color: $error; height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    # Which input to focus when the parser names a field.
    FIELD_IDS = {
        "bundle@version": "#rollout-bundle",
        "target": "#rollout-target",
        "phases": "#rollout-phases",
        "bake": "#rollout-bake",
        "max failures": "#rollout-max-failures",
    }

    def __init__(self, refs: list[str], bundle: str | None = None, target: str = "") -> None:
        super().__init__()
        self.refs = refs
        self.bundle = bundle
        self.target = target

    def compose(self) -> ComposeResult:
        with Vertical(id="rollout-dialog", classes="dialog"):
            yield Static(Content("Start a rollout"), id="rollout-form-title")
            with Horizontal(classes="field"):
                yield Label("bundle@version")
                select: Select[str] = Select(
                    [(r, r) for r in self.refs], prompt="bundle@version", id="rollout-bundle"
                )
                if self.bundle in self.refs:
                    select.value = self.bundle
                yield select
            with Horizontal(classes="field"):
                yield Label("target")
                yield Input(
                    self.target, placeholder="device:ID, group:NAME or tag:NAME",
                    id="rollout-target",
                )  # fmt: skip
            with Horizontal(classes="field"):
                yield Label("phases")
                yield Input(
                    placeholder="e.g. 1%,10%,50%,100% or 5,50,100% (blank: one phase)",
                    id="rollout-phases",
                )
            with Horizontal(classes="field"):
                yield Label("bake")
                yield Input(placeholder="e.g. 10m, between phases (blank: none)", id="rollout-bake")
            with Horizontal(classes="field"):
                yield Label("max failures")
                yield Input(placeholder="e.g. 2 or 2% (blank: 0)", id="rollout-max-failures")
            yield Static("", id="rollout-error")
            with Horizontal(classes="buttons"):
                yield Button("Start…", variant="primary", id="rollout-go")
                yield Button("Cancel (esc)", id="rollout-cancel")

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#rollout-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    @on(Button.Pressed, "#rollout-go")
    def _go(self) -> None:
        bundle = self.query_one("#rollout-bundle", Select).value
        error = self.query_one("#rollout-error", Static)
        try:
            req = cm.rollout_request(
                bundle if isinstance(bundle, str) else None,
                self.query_one("#rollout-target", Input).value,
                self.query_one("#rollout-phases", Input).value,
                self.query_one("#rollout-bake", Input).value,
                self.query_one("#rollout-max-failures", Input).value,
            )
        except FieldError as exc:
            message = str(exc)
            if not message.startswith(exc.field):
                message = f"{exc.field}: {message}"
            error.update(Content(message))
            self.query_one(self.FIELD_IDS.get(exc.field, "#rollout-target")).focus()
            return
        error.update(Content(""))
        self.dismiss(RolloutRequest(*req))


class HelpScreen(ModalScreen[None]):
    """``?``: every key, grouped by view (generated from the bindings, so it stays true)."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen #help-dialog { width: 90; max-width: 100%; height: 90%; }
    HelpScreen #help-text { height: auto; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Static(Content("\n".join(self.lines)), id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    """A read-only text (``d`` describe, ``y`` YAML) over the current screen; Esc closes."""

    DEFAULT_CSS = """
    TextScreen { align: center middle; }
    TextScreen #text-dialog { width: 100; max-width: 100%; height: 90%; }
    TextScreen #text-title { text-style: bold; margin-bottom: 1; }
    TextScreen #text-body { height: 1fr; }
    """
    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(id="text-dialog", classes="dialog"):
            yield Static(Content(self.title_text), id="text-title")
            yield TextArea(self.body, read_only=True, id="text-body")

    def on_mount(self) -> None:
        self.query_one("#text-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)

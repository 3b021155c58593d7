"""Modal dialogs: yes/no confirmation, and the "cannot use the hub" screen."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static


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

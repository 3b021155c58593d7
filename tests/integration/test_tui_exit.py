"""How the TUI ends: a deliberate quit keeps its exit code; anything else (a handler's
exception, or a stray CancelledError that Textual's message loop swallows and stops on)
says why on stderr and exits non-zero, never 0 as if the operator had quit."""

from __future__ import annotations

import asyncio

import pytest
from textual.message import Message

from tests.harness.ports import free_port
from tui.app import EXIT_CRASH, EXIT_HUB, SignalBeamApp, run_app
from tui.hub.session import HubSession


class Boom(Message):
    pass


class CancelledApp(SignalBeamApp):
    """Lets a CancelledError out of a handler, as a cancelled DOM removal once did."""

    def on_mount(self) -> None:
        super().on_mount()
        self.set_timer(0.3, lambda: self.post_message(Boom()))

    def on_boom(self, _: Boom) -> None:
        raise asyncio.CancelledError


class FailingApp(SignalBeamApp):
    def on_mount(self) -> None:
        super().on_mount()
        self.set_timer(0.3, lambda: self.post_message(Boom()))

    def on_boom(self, _: Boom) -> None:
        raise RuntimeError("a bug in a handler")


class QuittingApp(SignalBeamApp):
    def on_mount(self) -> None:
        super().on_mount()
        self.set_timer(0.3, self.action_quit_app)


def session() -> HubSession:
    return HubSession(f"nats://127.0.0.1:{free_port()}", "key", timeout=2)


def test_a_cancelled_handler_is_reported_and_exits_non_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_app(CancelledApp(session()), headless=True) == EXIT_CRASH
    err = capsys.readouterr().err
    assert "the TUI ended unexpectedly" in err and "Boom" in err, err


def test_an_exception_in_a_handler_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_app(FailingApp(session()), headless=True)
    assert code not in (0, None)
    assert "the TUI ended unexpectedly" in capsys.readouterr().err


def test_a_deliberate_quit_keeps_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    # Never connected (nothing listens on the port): a quit exits 1, and says nothing more.
    assert run_app(QuittingApp(session()), headless=True) == EXIT_HUB
    assert "unexpectedly" not in capsys.readouterr().err

"""The hub-unreachable banner: what is wrong, since when, that the TUI keeps retrying, and
how old the data on screen is. Text, so it reads the same without colour."""

from __future__ import annotations

import time

from textual.content import Content
from textual.widgets import Static

from tui.models import common as model


def banner_text(problem: str, since: float, data_at: float | None, now: float) -> str:
    """e.g. ``⚠ hub unreachable since 14:02:11 (45s) · retrying · data shown is 45s old``."""
    when = time.strftime("%H:%M:%S", time.localtime(since))
    text = f"⚠ {problem} since {when} ({model.age(now - since)}) · retrying"
    if data_at is None:
        return text + " · no data yet"
    return text + f" · data shown is {model.age(now - data_at)} old"


class HubBanner(Static):
    """Hidden while the hub answers. The app updates every banner on its screens."""

    DEFAULT_CSS = """
    HubBanner {
        display: none;
        height: auto;
        padding: 0 1;
        background: $error;
        color: $text;
        text-style: bold;
    }
    HubBanner.down {
        display: block;
    }
    """

    def show_problem(self, text: str) -> None:
        self.update(Content(text))
        self.add_class("down")

    def clear_problem(self) -> None:
        self.remove_class("down")

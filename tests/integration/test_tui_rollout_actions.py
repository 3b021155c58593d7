"""Rollout actions confirmed over and over from the Rollouts tab, against a real hub: the app
keeps running and the list never goes blank while it refreshes.

Each round starts a rollout through its confirmation (the count and the question the form
leads to), then pauses, resumes and aborts it, each after its question: 20 rounds, so every action is confirmed 20 times in a
row. The seeded devices never report, so a rollout stays running until it is aborted. A
sampler beside the Pilot records the rollouts list and the highlighted rollout's device rows
at every turn of the event loop; once rows have appeared, neither may ever be empty (a
clear-and-rebuild would show up as an empty sample).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from bundles.validate import load_file
from tests.harness.tui import EXAMPLES, Hub, seed, view_loaded, wait_for
from tui.app import SignalBeamApp
from tui.dialogs import ConfirmScreen, RolloutRequest
from tui.screens.main import MainScreen
from tui.widgets.base import job
from tui.widgets.rollouts import RolloutItem, RolloutsView

ROUNDS = 20


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("tuiroll") / "data", seed)
    try:

        async def push() -> None:
            async with h.client() as c:
                for v in ("1.2.0", "1.3.0"):
                    spec = load_file(EXAMPLES / f"{v}.yaml").to_dict()
                    await c.call("bundles.push", {"spec": spec})

        asyncio.run(push())
        yield h
    finally:
        assert h.stop() == 0, h.proc.log_tail()


class Sampler:
    """Counts what the Rollouts tab shows at every event-loop turn; the empties are the
    blank frames an operator would see."""

    def __init__(self, view: RolloutsView) -> None:
        self.view = view
        self.samples = 0
        self.empty_lists = 0
        self.empty_devices = 0
        self.seen_list = self.seen_devices = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        listing = self.view.query_one("#rollouts-list")
        devices = self.view.query_one("#rollout-devices", DataTable)
        while True:
            items = [c for c in listing.children if isinstance(c, RolloutItem)]
            live = [c for c in items if c.is_attached and not c._closing]
            self.samples += 1
            if live:
                self.seen_list = True
            elif self.seen_list:
                self.empty_lists += 1
            if devices.row_count:
                self.seen_devices = True
            elif self.seen_devices:
                self.empty_devices += 1
            await asyncio.sleep(0)


def running(app: SignalBeamApp) -> bool:
    return app.is_running and app.return_code is None


async def confirm(pilot: Pilot[Any], app: SignalBeamApp, question_start: str, what: str) -> None:
    def asked() -> bool:
        return isinstance(app.screen, ConfirmScreen) and bool(app.screen.query("#confirm-question"))

    await wait_for(pilot, asked, f"{what}: asked ({list(app.notices)})")
    question = str(app.screen.query_one("#confirm-question", Static).content)
    assert question.startswith(question_start), question
    await pilot.press("y")
    await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), f"{what}: dialog closed")


@pytest.mark.timeout(1200)  # 80 confirmations against a hub: minutes on a starved machine
async def test_every_rollout_action_confirmed_twenty_times(hub: Hub) -> None:
    app = hub.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, view_loaded(app, "#fleet-view"), "the fleet loaded")
        await pilot.press("r")
        view = app.screen.query_one(RolloutsView)
        await wait_for(pilot, lambda: view.loads >= 1, "rollouts loaded")
        sampler = Sampler(view)
        sampler.start()
        try:
            for n in range(ROUNDS):
                started = sum(1 for _, t, _ in app.notices if t == "rollout started")
                # The form is the Rollouts tab's `s` (the end-to-end walk fills it); here the
                # request goes straight to what the form submits: the count and the question.
                ref = f"warehouse-monitor@{'1.3.0' if n % 2 else '1.2.0'}"
                req = RolloutRequest(ref, "tag:rpi", None, None)
                view.run_worker(job(view._confirm_start, req), group="start", exclusive=True)
                await confirm(
                    pilot, app, "Start a rollout of warehouse-monitor@", f"round {n}: start"
                )
                await wait_for(
                    pilot,
                    lambda s=started: (
                        sum(  # type: ignore[misc]
                            1 for _, t, _ in app.notices if t == "rollout started"
                        )
                        > s
                    ),
                    f"round {n}: started",
                )
                rid = view.selected
                for key, action, state in (
                    ("p", "pause", "paused"),
                    ("c", "resume", "running"),
                    ("x", "abort", "aborted"),
                ):
                    await wait_for(
                        pilot,
                        lambda a=action: view.check_action("rollout_control", (a,)) is True,  # type: ignore[misc]
                        f"round {n}: {action} allowed",
                    )
                    assert view.selected == rid
                    listing = view.query_one("#rollouts-list")
                    listing.focus()
                    await pilot.press(key)
                    await confirm(pilot, app, "", f"round {n}: {action}")
                    await wait_for(
                        pilot,
                        lambda s=state, r=rid: view.rollouts.get(r or "", {}).get("state") == s,  # type: ignore[misc]
                        f"round {n}: {state}",
                    )
                    assert running(app), f"round {n}: the app ended after {action}"
        finally:
            await sampler.stop()
        assert running(app)
        assert sampler.seen_list and sampler.seen_devices
        assert (sampler.empty_lists, sampler.empty_devices) == (0, 0), sampler.samples
        errors = [(t, m) for sev, t, m in app.notices if sev == "error"]
        assert errors == []

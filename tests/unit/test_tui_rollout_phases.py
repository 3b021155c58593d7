"""The rollout view's phase lines (tui/widgets/rollouts.py ``phase_summary``): every number
is the hub's, phases count from 1, and the bake time left counts down between answers."""

from __future__ import annotations

from typing import Any

from tui.widgets.rollouts import baking, phase_summary

ROLLOUT: dict[str, Any] = {
    "target": "tag:rpi",
    "state": "running",
    "phase": 2,
    "phase_count": 4,
    "steps": "1%,10%,50%,100%",
    "bake": 600,
    "max_failures": "2%",
    "max_failures_allowed": 200,
    "total": 10_000,
    "reason": "",
    "phases": [
        {"number": 1, "size": 100, "state": "done", "done": 100, "failed": 1, "max_failures": 2,
         "bake_left": 0},
        {"number": 2, "size": 900, "state": "baking", "done": 900, "failed": 3,
         "max_failures": 18, "bake_left": 250},
        {"number": 3, "size": 4000, "state": "pending", "done": 0, "failed": 0,
         "max_failures": 80, "bake_left": 0},
        {"number": 4, "size": 5000, "state": "pending", "done": 0, "failed": 0,
         "max_failures": 100, "bake_left": 0},
    ],
}  # fmt: skip


def test_phase_lines_show_progress_limits_and_bake_left() -> None:
    lines = phase_summary(ROLLOUT).splitlines()
    assert lines[0] == (
        "tag:rpi · phase 2/4 · steps 1%,10%,50%,100% · bake 10m · max failures 2% (200 of 10000)"
    )
    assert lines[1] == "✓ phase 1/4  done    100/100 done · 1 failed (max 2)"
    assert lines[2] == "◷ phase 2/4  baking  900/900 done · 3 failed (max 18) · bake 4m10s left"
    assert lines[4].startswith("· phase 4/4  pending 0/5000 done")
    assert baking(ROLLOUT)
    # ten seconds later, without a new answer from the hub
    assert phase_summary(ROLLOUT, elapsed=10).splitlines()[2].endswith("bake 4m left")


def test_a_paused_rollout_says_why_under_the_headline() -> None:
    paused = {**ROLLOUT, "state": "paused", "reason": "phase 2 of 4: 19 of 900 devices failed"}
    assert phase_summary(paused).splitlines()[1] == "phase 2 of 4: 19 of 900 devices failed"


def test_not_started_and_one_phase() -> None:
    one = {"target": "group:lab", "phase": None, "phase_count": 1, "steps": "100%",
           "max_failures": 0, "phases": [{"number": 1, "state": "pending"}]}  # fmt: skip
    assert phase_summary(one) == "group:lab · not started · steps 100% · max failures 0"
    assert not baking(one)


def test_a_phase_held_by_deferred_devices_counts_them_and_the_reason_names_one() -> None:
    held = {**ROLLOUT, "reason": "phase 2 waits for 3 deferred devices: pi-07 locked by anna"
            " since 2026-12-05T01:40+01:00 (and 2 more)"}  # fmt: skip
    held["phases"] = [dict(p) for p in ROLLOUT["phases"]]
    held["phases"][1].update(state="running", done=897, deferred=3)
    lines = phase_summary(held).splitlines()
    assert lines[1].startswith("phase 2 waits for 3 deferred devices: pi-07 locked by anna")
    assert lines[3] == "▶ phase 2/4  running 897/900 done · 3 failed (max 18) · 3 deferred"

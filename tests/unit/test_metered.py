"""Metered links, the pure parts and the stores: budget grammar, pacing tiers, when rows wait,
24 h usage from a restarting counter, metrics rows covering a span, the desired document's
``metered`` field, the "same" heartbeat, and the hub's budget resolution and offline grace."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.metrics import folding
from agent.store import Store as AgentStore
from agent.sync.pacing import DEFAULT, HEADROOM, TIERS, LinkUsage, pacing_for, should_send
from hub.desired import Membership
from hub.metered import budget_for, usage
from hub.store import Store as HubStore
from hub.timeutil import now_iso
from protocol.desired import DesiredState
from protocol.errors import DesiredDecodeError, MessageError
from protocol.heartbeat import Heartbeat, decode_heartbeat
from protocol.metered import BudgetError, format_budget, parse_budget


@pytest.mark.parametrize(
    ("text", "per_day"),
    [
        ("100KB/day", 100_000),
        ("100kb", 100_000),
        ("1MB/day", 1_000_000),
        ("0.5 MB / day", 500_000),
        ("7MB/week", 1_000_000),
        ("30MiB/month", 1024**2),
        ("2GB/mo", round(2e9 / 30)),
    ],
)
def test_budget_grammar(text: str, per_day: int) -> None:
    assert parse_budget(text) == per_day


@pytest.mark.parametrize("text", ["", "100", "100XB/day", "100KB/year", "-1KB", "1KB/day", "x"])
def test_bad_budgets_are_refused_with_the_field(text: str) -> None:
    with pytest.raises(BudgetError) as exc:
        parse_budget(text)
    assert exc.value.field == "budget"


def test_budget_format_round_trips() -> None:
    assert format_budget(100_000) == "100KB/day"
    assert parse_budget(format_budget(250_000)) == 250_000
    assert format_budget(None) == "-"


def test_no_budget_is_the_default_pacing_with_the_configured_heartbeat() -> None:
    assert pacing_for(None) == DEFAULT
    assert pacing_for(None, heartbeat=45.0).heartbeat == 45.0
    # The defaults fit the 1 MB/day goal by the measured costs.
    assert DEFAULT.estimate() <= 1_000_000


@given(st.integers(min_value=10_000, max_value=10**9))
def test_a_budget_picks_a_tier_that_fits_it_or_the_most_frugal(budget: int) -> None:
    p = pacing_for(budget)
    assert p.budget == budget
    assert p.estimate() <= budget * HEADROOM or p.tier == len(TIERS)
    # Detail goes first: no tier sends rows more often than a looser one.
    if p.tier > 0:
        assert p.rollup_span >= DEFAULT.rollup_span and p.flush >= DEFAULT.flush


@given(
    st.integers(min_value=10_000, max_value=10**8), st.integers(min_value=10_000, max_value=10**8)
)
def test_a_smaller_budget_never_costs_more(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert pacing_for(lo).estimate() <= pacing_for(hi).estimate()


def test_a_tier_never_beats_faster_than_configured() -> None:
    assert pacing_for(100_000, heartbeat=7200.0).heartbeat == 7200.0


def test_rollups_wait_for_company_events_never_wait() -> None:
    assert not should_send([], 0.0, 1000.0, 600.0)
    assert not should_send(["metrics.1m", "metrics.1m"], 900.0, 1000.0, 600.0)
    assert should_send(["metrics.1m"], 300.0, 1000.0, 600.0)
    for urgent in ("event", "observed", "deployment", "gate", "desired", "reconcile"):
        assert should_send(["metrics.1m", urgent], 999.0, 1000.0, 600.0)


def test_link_usage_over_24h_through_a_leaf_restart() -> None:
    u = LinkUsage()
    assert u.last_day() is None
    u.sample(0.0, 5_000)  # what came before the first sample is nobody's
    u.sample(3600.0, 6_000)
    assert u.last_day() == 1_000
    u.sample(7200.0, 400)  # the leaf restarted: its counter starts again
    assert u.last_day() == 1_400
    u.sample(7201.0 + 86_400.0, 900)  # over a day later: the old hours left the window
    assert u.last_day() == 500


@pytest.fixture
def agent_store(tmp_path: Path) -> AgentStore:
    s = AgentStore.open(tmp_path / "agent.db", device_id="d1")
    yield s
    s.close()


def _rows(store: AgentStore) -> list[dict]:
    return [json.loads(r.payload_json) for r in store.outbox_pending(10_000, 10**9)]


def _fill(store: AgentStore, t0: float, minutes: int, start: int = 0) -> None:
    for m in range(start, start + minutes):
        store.record_samples(t0 + m * 60.0, {"cpu.percent": float(m % 7), "load.1": 1.0})
        folding.roll_up(store, t0 + (m + 1) * 60.0)


def test_metrics_rows_cover_a_span_and_every_minute_goes_up_once(agent_store: AgentStore) -> None:
    t0 = float(int(time.time() // 3600 * 3600)) - 5 * 3600
    _fill(agent_store, t0, 30)  # full detail: one row a minute
    agent_store.set_upstream_span(900)
    _fill(agent_store, t0, 90, start=30)  # metered: rows of 15 minutes
    agent_store.set_upstream_span(60)
    _fill(agent_store, t0, 30, start=120)  # back: the minutes folded but unsent go first
    rows = _rows(agent_store)
    minute_rows = [r for r in rows if "span" not in r]
    span_rows = [r for r in rows if "span" in r]
    assert span_rows and all(r["span"] == 900 for r in span_rows)
    # Every sample counted exactly once upstream, whatever the row size.
    assert sum(r["metrics"]["cpu.percent"][3] for r in rows) == 150
    buckets = [r["bucket"] for r in rows]
    assert len(buckets) == len(set(buckets))  # no bucket sent twice
    assert len(minute_rows) == 60 and len(rows) < 150 - 60
    # The device itself keeps every minute.
    local = agent_store.read_now(lambda c: c.execute("SELECT count(*) FROM metrics_1m").fetchone())
    assert local[0] == 150 * 2


def test_budget_from_the_hub_is_kept_in_the_store(agent_store: AgentStore) -> None:
    assert agent_store.metered_budget() is None
    agent_store.put_desired(DesiredState(3, None, metered=100_000))
    assert agent_store.metered_budget() == 100_000
    agent_store.put_desired(DesiredState(4, None))  # the hub cleared it
    assert agent_store.metered_budget() is None


def test_desired_document_metered_field() -> None:
    doc = DesiredState(1, None, metered=100_000)
    assert json.loads(doc.to_json())["metered"] == {"budget": 100_000}
    assert DesiredState.from_json(doc.to_json()).metered == 100_000
    # Unset: not written, so every document without it keeps its bytes (and hash).
    assert b"metered" not in DesiredState(1, None).to_json()
    for bad in ('"100KB"', '{"budget": "100KB"}', '{"budget": 5}', '{"budget": true}'):
        raw = b'{"v":1,"generation":1,"spec":null,"metered":' + bad.encode() + b"}"
        with pytest.raises(DesiredDecodeError) as exc:
            DesiredState.from_json(raw)
        assert exc.value.field.startswith("metered")


def test_same_heartbeat_is_small_and_decodes() -> None:
    full = Heartbeat("d1", time.time(), "0.1.0", bundle_ref="a@1", last_seq=9, interval=30.0)
    same = Heartbeat("d1", time.time(), "0.1.0", same=True, interval=60.0)
    assert len(same.to_json()) < len(full.to_json()) / 2
    got = decode_heartbeat(same.to_json(), subject_device="d1")
    assert got.same and got.interval == 60.0 and got.agent_version == ""
    assert not decode_heartbeat(full.to_json()).same
    # Only a "same" one may leave the agent version out.
    with pytest.raises(MessageError):
        decode_heartbeat(b'{"v":1,"device_id":"d1","ts":1700000000}')
    # A change of state is not "same"; the time, metrics and outbox position are.
    moved = Heartbeat("d1", 1.0, "0.1.0", bundle_ref="a@1", last_seq=99, metrics={"x": 1.0})
    assert moved.change_key() == full.change_key()
    assert Heartbeat("d1", 1.0, "0.1.0", bundle_ref="a@2").change_key() != full.change_key()


def test_hub_budget_device_wins_else_smallest_group() -> None:
    m = Membership("d1", frozenset({"a", "b"}))
    assert budget_for(m, {}, {}) is None
    assert budget_for(m, {}, {"a": 500_000, "b": 100_000, "c": 10_000}) == 100_000
    assert budget_for(m, {"d1": 2_000_000}, {"a": 100_000}) == 2_000_000
    assert usage(None) is None and usage({"v": 1}) is None
    assert usage({"budget": 100_000, "bytes_day": 120_000}) == {
        "budget": 100_000,
        "bytes_day": 120_000,
        "over": True,
    }


@pytest.fixture
def hub_store(tmp_path: Path) -> HubStore:
    s = HubStore.open(tmp_path / "hub.db")
    yield s
    s.close()


def test_hub_store_budgets_and_usage(hub_store: HubStore) -> None:
    hub_store.upsert_device("d1", "acme")
    assert hub_store.set_budget("group", "cell", 100_000, "ops")
    assert not hub_store.set_budget("group", "cell", 100_000, "ops")
    members = [Membership("d1", frozenset({"cell"}))]
    assert hub_store.budgets_of(members) == {"d1": 100_000}
    assert hub_store.set_budget("group", "cell", None, "ops")
    assert hub_store.budgets_of(members) == {}
    beat = json.dumps({"budget": 100_000, "bytes_day": 40_000})
    hub_store.put_heartbeats([("d1", beat, "0.1", now_iso(), now_iso(), 60.0)])
    # A "same" heartbeat keeps the summary the hub has.
    hub_store.put_heartbeats([("d1", None, "", now_iso(), now_iso(), 60.0)])
    assert hub_store.usage_of(["d1"])["d1"] == {
        "budget": 100_000,
        "bytes_day": 40_000,
        "over": False,
    }


def test_offline_grace_stretches_to_three_of_the_devices_intervals(hub_store: HubStore) -> None:
    now = time.time()
    for d, interval in (("quiet", 600.0), ("chatty", 30.0), ("old", None)):
        hub_store.upsert_device(d, "acme")
        hub_store.put_heartbeats(
            [(d, "{}", "0.1", now_iso(now - 900), now_iso(now - 900), interval)]
        )
    # Grace 90 s: 15 minutes of silence is too long for the 30 s device and for one that
    # never said its interval, not for one that said its next heartbeat comes in 10 minutes.
    stale = dict(hub_store.mark_stale_offline(now_iso(now - 90), now=now))
    assert set(stale) == {"chatty", "old"}
    stale = dict(hub_store.mark_stale_offline(now_iso(now - 90), now=now + 1000))
    assert set(stale) == {"quiet"}


def _request(*argv: str) -> tuple[str, dict]:
    from tui import cli

    args = cli.build_parser().parse_args(list(argv))
    verb, body = args.request(args)
    return verb, body


def test_cli_metered_commands_build_their_bodies() -> None:
    assert _request("device", "metered", "set", "pi-1", "--budget", "100KB/day") == (
        "metered.set",
        {"target": "device:pi-1", "budget": "100KB/day"},
    )
    assert _request("group", "metered", "set", "cell", "--budget", "1MB/day") == (
        "metered.set",
        {"target": "group:cell", "budget": "1MB/day"},
    )
    assert _request("group", "metered", "clear", "cell") == (
        "metered.set",
        {"target": "group:cell", "clear": True},
    )
    assert _request("metered") == ("metered.list", {})


def test_device_show_and_screen_say_bytes_used_against_the_budget() -> None:
    import io

    from tui.metered_cli import print_budget_set
    from tui.models import detail as dm
    from tui.output import show_device

    metered = {"budget_set": 100_000, "budget": 100_000, "bytes_day": 41_200, "over": False}
    out = io.StringIO()
    show_device({"id": "pi-1", "metered": metered}, out)
    assert "41.2KB in 24 h of 100KB/day" in out.getvalue()
    over = {**metered, "bytes_day": 130_000, "over": True}
    assert "OVER BUDGET" in dm.metered_line(over)
    pending = {"budget_set": 50_000, "budget": None, "bytes_day": None, "over": False}
    assert dm.metered_line(pending) == "not measured yet; hub set 50KB/day, not applied yet"
    assert "data 41.2KB in 24 h of 100KB/day" in dm.gate_lines({"metered": metered})
    out = io.StringIO()
    print_budget_set({"target": "group:cell", "budget": 100_000, "changed": True,
                      "devices": ["a"]}, out)  # fmt: skip
    assert "group:cell: data budget set: 100KB/day" in out.getvalue()


def test_agent_status_names_the_pacing_and_the_bytes_used() -> None:
    from agent.cli import _format_status

    pacing = pacing_for(100_000).to_dict()
    status = {
        "agent": {"running": True, "pid": 7},
        "device_id": "d1",
        "desired": None,
        "deployment": None,
        "last_reconcile": None,
        "containers": [],
        "outbox": {"pending": 0, "bytes": 0, "oldest_created_at": None},
        "last_event_seq": 0,
        "disk": None,
        "hub": {"online": True, "mode": "leaf", "metered": {**pacing, "bytes_day": 41_200}},
        "http": {"enabled": False},
        "metrics": {},
    }
    text = _format_status(status)
    assert "metered     budget 100KB/day, tier 4" in text and "41.2KB in 24 h" in text


def test_pacing_keeps_the_configured_intervals_and_a_tier_only_slows_them() -> None:
    from agent.sync.pacing import pacing_for

    p = pacing_for(None, heartbeat=5.0, desired_poll=2.0)
    assert (p.heartbeat, p.desired_poll) == (5.0, 2.0)  # not metered: the config rules
    slow = pacing_for(10_000, heartbeat=5.0, desired_poll=2.0)
    assert slow.desired_poll > 2.0 and slow.heartbeat > 5.0  # metered: the tier's slower
    assert pacing_for(10_000, desired_poll=10**6).desired_poll == 10**6  # a slower config wins

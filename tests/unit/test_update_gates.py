"""Maintenance windows (bundles.windows) and the update gate (agent.reconcile.gates): table
tests of the grammar and the decision, property tests of the calendar across DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.reconcile.gates import Lock, decide
from bundles.windows import (
    Window,
    WindowError,
    current,
    local_iso,
    parse_window,
    parse_windows,
    span,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # a 30-minute DST shift
ZONES = [BERLIN, NEW_YORK, LORD_HOWE, ZoneInfo("UTC"), ZoneInfo("Asia/Kolkata")]


def at(text: str, tz: ZoneInfo = BERLIN) -> datetime:
    """A local wall time in ``tz`` as an aware UTC instant (fold=0)."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC)


@pytest.mark.parametrize(
    ("text", "days", "start", "end"),
    [
        ("Sat,Sun 02:00-05:00", {5, 6}, 120, 300),
        ("mon-fri 22:30-01:00", {0, 1, 2, 3, 4}, 1350, 60),
        ("Fri-Mon 01:00-02:00", {4, 5, 6, 0}, 60, 120),
        ("* 00:00-24:00", set(range(7)), 0, 1440),
        ("daily 3:00-4:00", set(range(7)), 180, 240),
        ("Saturday,TUE 23:00-00:00", {5, 1}, 1380, 0),
    ],
)
def test_grammar_parses(text: str, days: set[int], start: int, end: int) -> None:
    w = parse_window(text)
    assert (set(w.days), w.start, w.end) == (days, start, end)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("Sox 02:00-05:00", "days", "'Sox' is not a day"),
        ("Mo 02:00-05:00", "days", "'Mo' is not a day"),
        ("Sat,,Sun 02:00-05:00", "days", "'' is not a day"),
        ("Sat 25:00-05:00", "start", "not a time from 00:00 to 23:59"),
        ("Sat 2am-05:00", "start", "not a time HH:MM"),
        ("Sat 02:00-24:30", "end", "00:00 to 23:59 (or 24:00)"),
        ("Sat 02:00", "end", "has no end"),
        ("Sat 02:00-02:00", "end", "must differ from the start"),
        ("02:00-05:00", "window", "DAYS HH:MM-HH:MM"),
        ("Sat 02:00-03:00 extra", "window", "DAYS HH:MM-HH:MM"),
    ],
)
def test_grammar_errors_name_the_field(text: str, field: str, words: str) -> None:
    with pytest.raises(WindowError) as exc:
        parse_window(text)
    assert exc.value.field == field
    assert words in str(exc.value) and text[:10] in str(exc.value)


@pytest.mark.parametrize(
    ("windows", "now", "inside", "until"),
    [
        # Friday evening: the weekend window opens Saturday 02:00 (winter: +01:00)
        (["Sat,Sun 02:00-05:00"], "2026-12-04 21:00", False, "2026-12-05T02:00+01:00"),
        (["Sat,Sun 02:00-05:00"], "2026-12-05 02:00", True, None),
        (["Sat,Sun 02:00-05:00"], "2026-12-05 04:59", True, None),
        (["Sat,Sun 02:00-05:00"], "2026-12-05 05:00", False, "2026-12-06T02:00+01:00"),
        (["Sat,Sun 02:00-05:00"], "2026-12-06 05:00", False, "2026-12-12T02:00+01:00"),
        # across midnight: a Friday-night window is still open early Saturday
        (["Fri 22:00-02:00"], "2026-12-05 01:59", True, None),
        (["Fri 22:00-02:00"], "2026-12-05 02:00", False, "2026-12-11T22:00+01:00"),
        (["Fri 22:00-02:00"], "2026-12-04 21:59", False, "2026-12-04T22:00+01:00"),
        (["* 00:00-24:00"], "2026-12-04 13:00", True, None),
        # two windows: the nearer opening
        (["Sun 03:00-04:00", "Sat 23:00-23:30"], "2026-12-05 12:00", False,
         "2026-12-05T23:00+01:00"),
        # spring forward (Berlin, 2026-03-29 02:00 -> 03:00): 02:30 does not exist; a window
        # from 02:30 opens when the clock jumps, at 03:00 CEST
        (["Sun 02:30-04:00"], "2026-03-29 01:59", False, "2026-03-29T03:00+02:00"),
        (["Sun 02:30-04:00"], "2026-03-29 03:00", True, None),
        # a window wholly inside the skipped hour does not occur that day
        (["Sun 02:00-02:45"], "2026-03-29 01:00", False, "2026-04-05T02:00+02:00"),
        # fall back (2026-10-25 03:00 CEST -> 02:00 CET): ends at the *last* 02:30
        (["Sun 01:00-02:30"], "2026-10-25 02:45", True, None),
    ],
)  # fmt: skip
def test_windows_table(windows: list[str], now: str, inside: bool, until: str | None) -> None:
    ws = parse_windows(windows)
    t = at(now)
    assert (current(ws, t, BERLIN) is not None) == inside
    d = decide(now=t, tz=BERLIN, locks=(), windows=ws)
    assert d.allow == inside
    if until is not None:
        assert d.reason == f"outside maintenance window until {until}"
        assert d.until is not None and local_iso(d.until, BERLIN) == until
        assert d.describe().startswith("deferred: outside maintenance window until")


def test_fall_back_window_is_longer_by_the_repeated_hour() -> None:
    s = span(parse_window("Sun 01:00-03:00"), date(2026, 10, 25), BERLIN)
    assert s is not None and s[1] - s[0] == timedelta(hours=3)
    s = span(parse_window("Sun 01:00-03:00"), date(2026, 3, 29), BERLIN)
    assert s is not None and s[1] - s[0] == timedelta(hours=1)


def test_lock_defers_and_names_who_and_since() -> None:
    since = at("2026-12-04 20:15").timestamp()
    d = decide(
        now=at("2026-12-04 21:00"),
        tz=BERLIN,
        locks=[Lock("tech anna", since, "api"), Lock("temp-sensor", since + 60, "file:x.lock")],
        windows=(),
    )
    assert d.kind == "locked" and d.until is None
    assert d.describe() == "deferred: locked by tech anna since 2026-12-04T20:15+01:00 (and 1 more)"


@pytest.mark.parametrize("force", [False, True])
def test_rollback_and_force_pass_everything(force: bool) -> None:
    locks = [Lock("app", 0.0, "api")]
    ws = parse_windows(["Sat 02:00-03:00"])
    now = at("2026-12-04 12:00")
    assert decide(now=now, tz=BERLIN, locks=locks, windows=ws, rollback=True, force=force).allow
    assert decide(now=now, tz=BERLIN, locks=locks, windows=ws, force=True).allow
    assert not decide(now=now, tz=BERLIN, locks=locks, windows=ws).allow


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        decide(now=datetime(2026, 1, 1), tz=BERLIN, locks=(), windows=())


# -- properties ---------------------------------------------------------------------------
days_st = st.frozensets(st.integers(0, 6), min_size=1)
window_st = st.builds(
    lambda d, s, e: Window(d, s, e if e % 1440 != s else (s + 30) % 1440, "w"),
    days_st,
    st.integers(0, 1439),
    st.integers(1, 1440),
)
# instants over two years, which cross every DST transition of the zones twice
instant_st = st.integers(
    int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()),
    int(datetime(2028, 1, 1, tzinfo=UTC).timestamp()),
).map(lambda s: datetime.fromtimestamp(s - s % 60, UTC))


@settings(max_examples=300, deadline=None)
@given(st.lists(window_st, min_size=1, max_size=3), instant_st, st.sampled_from(ZONES))
def test_deferral_ends_exactly_when_a_window_opens(
    windows: list[Window], now: datetime, tz: ZoneInfo
) -> None:
    d = decide(now=now, tz=tz, locks=(), windows=windows)
    if d.allow:
        assert current(windows, now, tz) is not None
        return
    assert d.until is not None and d.until > now
    assert decide(now=d.until, tz=tz, locks=(), windows=windows).allow
    # and the whole way there it stays deferred (checked at a few points before the opening)
    gap = d.until - now
    for frac in (0.0, 0.25, 0.5, 0.99):
        t = now + gap * frac
        if t < d.until - timedelta(seconds=1):
            assert current(windows, t, tz) is None, t


@settings(max_examples=200, deadline=None)
@given(window_st, st.dates(date(2026, 1, 1), date(2027, 12, 31)), st.sampled_from(ZONES))
def test_an_occurrence_is_never_negative_and_off_by_at_most_the_dst_shift(
    w: Window, day: date, tz: ZoneInfo
) -> None:
    s = span(w, day, tz)
    if s is None:
        return
    assert s[1] > s[0]
    assert abs((s[1] - s[0]) - timedelta(minutes=w.length)) <= timedelta(hours=1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(window_st, max_size=3),
    st.lists(st.builds(Lock, st.text(min_size=1, max_size=8), st.floats(0, 2e9), st.just("api"))),
    instant_st,
    st.sampled_from(ZONES),
    st.booleans(),
)
def test_rollback_is_never_blocked_and_a_lock_always_defers(
    windows: list[Window], locks: list[Lock], now: datetime, tz: ZoneInfo, force: bool
) -> None:
    assert decide(now=now, tz=tz, locks=locks, windows=windows, rollback=True, force=force).allow
    plain = decide(now=now, tz=tz, locks=locks, windows=windows)
    if locks:
        assert plain.kind == "locked" and plain.until is None
    elif not windows:
        assert plain.allow

"""sbutil.duration: the one duration grammar of the agent's and hub's settings and of bundles
(before it the hub accepted only "90s" and the agent also "1h30m")."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.config import parse_duration as hub_setting
from hub.errors import ConfigError
from sbutil.duration import parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("10m", 600),
        ("48h", 172800),
        ("30d", 2592000),
        ("1h30m", 5400),
        ("1m30s", 90),
        ("500ms", 0.5),
        ("1.5h", 5400),
        (" 7d ", 604800),
        ("10M", 600),  # the hub always read upper case; there is no month unit to confuse
        (3, 3),
        (2.5, 2.5),
    ],
)
def test_both_forms_parse(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "soon", "90", "-5s", "1h 30m", "s", "1x", "nan", "1e3s", True, None, [], 0, -1]
)
def test_refusals_name_the_input(value: Any) -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration(value)
    assert repr(value) in str(exc.value)
    assert "positive duration" in str(exc.value)


def test_zero_only_when_allowed() -> None:
    assert parse_duration(0, allow_zero=True) == 0
    assert parse_duration("0s", allow_zero=True) == 0
    for bad in (-1, math.inf, math.nan, 10**400, "-1s"):
        with pytest.raises(ValueError, match=r"is not a (finite )?duration"):
            parse_duration(bad, allow_zero=True)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("smhd")), min_size=1, max_size=4))
def test_parts_add_up(parts: list[tuple[int, str]]) -> None:
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    total = sum(n * unit[u] for n, u in parts)
    text = "".join(f"{n}{u}" for n, u in parts)
    if total == 0:
        with pytest.raises(ValueError):
            parse_duration(text)
    else:
        assert parse_duration(text) == total


@given(st.one_of(st.text(max_size=20), st.floats(), st.integers(), st.booleans(), st.none()))
def test_any_input_gives_seconds_or_value_error(value: Any) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert math.isfinite(seconds) and seconds > 0


def test_the_hub_reads_the_same_grammar_in_whole_seconds() -> None:
    assert hub_setting("1h30m", "retention_interval") == 5400
    assert hub_setting("90s", "retention_interval") == 90
    with pytest.raises(ConfigError) as exc:
        hub_setting("500ms", "retention_interval")
    assert exc.value.field == "retention_interval"
    with pytest.raises(ConfigError, match="'soon'"):
        hub_setting("soon", "retention_interval")

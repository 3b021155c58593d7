"""Query-parameter parsing: every refusal names its field."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from agent.http import validate as v
from agent.http.errors import ApiError

NOW = 1_800_000_000.0


def q(**kw: str) -> MultiDict[str]:
    return MultiDict(kw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-24h", NOW - 86400),
        ("-90s", NOW - 90),
        ("-7d", NOW - 7 * 86400),
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("2026-01-02T03:04:05Z", 1767323045.0),
        ("2026-01-02T04:04:05+01:00", 1767323045.0),
    ],
)
def test_timestamps(text: str, expected: float) -> None:
    assert v.timestamp(q(since=text), "since", NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["yesterday", "-1w", "2026-01-02T03:04:05", "+1h", "", "nan", "1e9"]
)
def test_bad_timestamps_name_the_field(text: str) -> None:
    with pytest.raises(ApiError) as err:
        v.timestamp(q(until=text), "until", NOW)
    assert err.value.field == "until" and err.value.status == 422


def test_integers_booleans_choices() -> None:
    assert v.integer(q(), "limit", 5, 1, 10) == 5
    assert v.integer(q(limit="10"), "limit", 5, 1, 10) == 10
    for bad in ("11", "0", "x", "1.5", "9" * 30, ""):
        with pytest.raises(ApiError) as err:
            v.integer(q(limit=bad), "limit", 5, 1, 10)
        assert err.value.field == "limit"
    assert v.boolean(q(follow="true"), "follow") is True
    assert v.boolean(q(follow="0"), "follow") is False
    with pytest.raises(ApiError):
        v.boolean(q(follow="maybe"), "follow")
    assert v.choice(q(), "resolution", "1m", ("raw", "1m")) == "1m"
    with pytest.raises(ApiError):
        v.choice(q(resolution="5m"), "resolution", "1m", ("raw", "1m"))


def test_unknown_and_repeated_parameters() -> None:
    with pytest.raises(ApiError) as err:
        v.only(q(limt="5"), ("limit",))
    assert err.value.field == "limt"
    with pytest.raises(ApiError) as err:
        v.integer(MultiDict([("limit", "1"), ("limit", "2")]), "limit", 5, 1, 10)
    assert "more than once" in err.value.message
    with pytest.raises(ApiError):
        v.integer(q(limit="1" * 300), "limit", 5, 1, 10)

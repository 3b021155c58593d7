"""Red team: the agent's local ``/v1/update-lock`` (a real agent HTTP server on loopback with
its store and engine, tests/harness/agent_http.py).

- a viewer token may read the locks, never take or release one (``forbidden``);
- ``reason`` is text a field tech types, and it goes into the event message
  (``update lock taken by WHO: REASON``) shown by ``signalbeam events`` and the hub: a
  newline, a NUL, a terminal escape or an unpaired surrogate escape must be refused naming
  ``reason`` (they were stored; the surrogate was an internal error), as ``who`` already is;
- a body over the limit is refused in the one error shape;
- a lock taken and released is audited with the token that did it.
"""

from __future__ import annotations

import pytest

from tests.harness.agent_http import ApiServer, Tokens, assert_error, events_of, module_api

pytestmark = pytest.mark.engine

PATH = "/v1/update-lock"


api, tokens = module_api("rt-lock")


def test_a_viewer_reads_but_cannot_take_or_release(api: ApiServer, tokens: Tokens) -> None:
    assert api.get(PATH, tokens.viewer).status_code == 200
    assert_error(api.post(PATH, tokens.viewer, json={"reason": "x"}), 403, "forbidden")
    assert_error(api.delete(PATH, tokens.viewer), 403, "forbidden")
    assert not api.get(PATH, tokens.viewer).json()["held"]


@pytest.mark.parametrize(
    "reason",
    ["line\nforged event line", "nul\x00", "esc\x1b[2J", "lone \ud800", "bidi \u202e"],
    ids=["newline", "nul", "escape", "surrogate", "bidi"],
)
def test_odd_reasons_are_refused_naming_the_field(
    api: ApiServer, tokens: Tokens, reason: str
) -> None:
    resp = api.post(PATH, tokens.operator, json={"who": "tech", "reason": reason})
    assert_error(resp, 422, "invalid", "reason")
    assert not api.get(PATH, tokens.viewer).json()["held"]


def test_an_oversized_body_is_refused_in_the_error_shape(api: ApiServer, tokens: Tokens) -> None:
    body = '{"reason": "' + "x" * (4 * 1024 * 1024) + '"}'
    resp = api.post(PATH, tokens.operator, data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code in (400, 413), resp.status_code
    assert set(resp.json()) == {"error"}


def test_a_lock_is_audited_with_its_token(api: ApiServer, tokens: Tokens) -> None:
    reason = "swapping the café's sensor, back at 14:00"
    resp = api.post(PATH, tokens.operator, json={"who": "tech", "reason": reason})
    assert resp.status_code == 201, resp.text
    assert api.delete(PATH, tokens.operator, params={"who": "tech"}).status_code == 200
    held = [e for e in events_of(api, "update_lock.held") if e.data.get("who") == "tech"]
    gone = [e for e in events_of(api, "update_lock.released") if e.data.get("who") == "tech"]
    assert held and held[-1].data["reason"] == reason and held[-1].data["actor"], held
    assert gone and gone[-1].data["actor"], gone

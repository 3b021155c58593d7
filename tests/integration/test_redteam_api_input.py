"""Red team: odd text in the hub's operator API (a real `signalbeam-hub run`, the real
client). JSON may carry an unpaired UTF-16 surrogate escape (``"\\ud800"``): it decoded to a
string no UTF-8 encoder takes, so ``vars.set`` answered ``internal`` after the handler ran.
It must be ``invalid`` naming the field, with nothing stored; a surrogate *pair* (an emoji
written as two escapes) and other odd but valid text (controls, bidi marks) are still taken
and read back unchanged.

Also probed and found answered with ``invalid`` naming the field (no fix needed): NUL in
names and values, over-long names and phases, huge integers for max_uses / confirm /
trust serial, negative expires_in, a malformed tenant, token or device id, nested lists for
ids, and bodies over the size limit (``too_large``). A body under the limit nested past the
JSON decoder's recursion limit was ``internal``: now ``bad_request`` on ``$``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.api import API_KEY_HEADER
from protocol.subjects import api
from tests.harness.sync_hub import SyncHub, admin_of_hub, module_hub
from tui.client import ApiError, HubClient

hub = module_hub("rt-api")
admin = admin_of_hub()


@pytest.mark.parametrize(
    ("verb", "body", "field"),
    [
        ("vars.set", {"scope": "fleet", "name": "SITE", "value": "a\ud800b"}, "value"),
        ("secrets.set", {"scope": "fleet", "name": "TOKEN", "value": "\udfff"}, "value"),
        ("vars.set", {"scope": "fleet", "name": "S\ud800", "value": "x"}, "name"),
        ("groups.create", {"name": "g1", "description": "\ud83d"}, "description"),
        ("bundles.push", {"spec": {"name": "b\udc00", "version": "1"}}, "spec"),
    ],
)
async def test_an_unpaired_surrogate_is_invalid_naming_the_field(
    hub: SyncHub, admin: HubClient, verb: str, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiError) as err:
        await admin.call(verb, body)
    assert err.value.code == "invalid", err.value
    assert err.value.field == field, err.value
    assert hub.query("SELECT count(*) FROM variables") == [(0,)]
    assert hub.query("SELECT count(*) FROM groups WHERE name = 'g1'") == [(0,)]


async def test_odd_but_valid_text_is_stored_as_given(hub: SyncHub, admin: HubClient) -> None:
    value = "caf\u00e9 \U0001f600 \u202e\u0007\t<&>"  # json.dumps writes the emoji as a pair
    await admin.call("vars.set", {"scope": "fleet", "name": "ODD", "value": value})
    listed = await admin.call("vars.list", {})
    got = [v for v in listed["items"] if v["name"] == "ODD"]
    assert got and got[0]["value"] == value, listed
    await admin.call("vars.unset", {"scope": "fleet", "name": "ODD"})


async def test_deeply_nested_json_is_bad_request_not_internal(
    hub: SyncHub, admin: HubClient
) -> None:
    # Under the size limit, nested past the JSON decoder's recursion limit.
    assert admin.nc is not None and admin.api_key
    for verb in ("vars.set", "trust.push", "bundles.push"):
        raw = b'{"x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        msg = await admin.nc.request(
            api(verb), raw, timeout=60, headers={API_KEY_HEADER: admin.api_key}
        )
        err = json.loads(msg.data)["error"]
        assert err["code"] == "bad_request" and err["field"] == "$", (verb, err)

"""The pure parts of presence over hub workers: which worker takes a heartbeat, when the
owner's sweep may mark devices offline, the heartbeat mapping in both login modes, and the
delivery audit's view of a partitioned report stream."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hub import natsjwt
from hub.config import DataDir, HubConfig, Secrets
from hub.natsconf import ACCOUNT, operator_mode, render
from hub.sync.audit import stored_reports
from hub.sync.presence import handles, may_sweep
from protocol.subjects import (
    HEARTBEAT_WILDCARD,
    heartbeat,
    heartbeat_partition,
    heartbeat_partition_transform,
    report_partition_of,
    report_partition_transform,
)

DEVICE_IDS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(DEVICE_IDS, st.integers(min_value=2, max_value=64))
def test_an_unmapped_heartbeat_is_exactly_one_workers(device_id: str, m: int) -> None:
    # The fallback subscription (mapping not in place yet): every worker sees the heartbeat,
    # exactly one takes it, the one that ingests the device's reports.
    takers = [p for p in range(m) if handles(heartbeat(device_id), p, m)]
    assert takers == [report_partition_of(device_id, m)]


@given(DEVICE_IDS, st.integers(min_value=2, max_value=64), st.data())
def test_a_mapped_heartbeat_is_its_partitions_only(device_id: str, m: int, data: Any) -> None:
    # Whatever partition the subject names (a device may publish ``sb.dev.<id>.heartbeat.<k>``
    # itself, tests/integration/test_redteam_presence.py), only the device's own worker
    # takes it, and only from its own partition's subject.
    p = data.draw(st.integers(min_value=0, max_value=m - 1))
    subject = f"{heartbeat(device_id)}.{p}"
    own = report_partition_of(device_id, m)
    assert [q for q in range(m) if handles(subject, q, m)] == ([p] if p == own else [])


@given(DEVICE_IDS)
def test_the_one_hub_takes_every_heartbeat(device_id: str) -> None:
    assert handles(heartbeat(device_id), None, 1)
    assert handles(heartbeat(device_id), 0, 1)


def test_device_permissions_cover_the_mapped_heartbeat() -> None:
    # nats-server checks a direct client's publish against the mapped subject
    # (sb.dev.<id>.heartbeat.<p>): the device's own sb.dev.<id>.> must keep covering it.
    publish, _ = natsjwt.device_permissions("dev-1")
    assert "sb.dev.dev-1.>" in publish
    publish, _ = natsjwt.device_permissions(natsjwt.NAME)
    assert f"sb.dev.{natsjwt.NAME}.>" in publish


def test_heartbeats_partition_like_reports() -> None:
    # The same partition() of the same token: a device's heartbeats and reports meet in
    # one worker.
    assert heartbeat_partition_transform(4) == report_partition_transform(4).replace(
        ".report.", ".heartbeat."
    )
    assert heartbeat_partition(3) == f"{HEARTBEAT_WILDCARD}.3"


@given(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**4),
    st.integers(min_value=1, max_value=10**4),
)
def test_the_sweep_waits_one_grace_after_start(since: int, elapsed: int, grace: int) -> None:
    assert may_sweep(since + elapsed, since, grace) == (elapsed >= grace)


def _claims(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def test_password_mode_maps_heartbeats_only_with_workers(tmp_path: Path) -> None:
    sec = Secrets("h", "o", "e")
    one = json.loads(render(HubConfig(), DataDir(tmp_path), sec))
    assert "mappings" not in one["accounts"][ACCOUNT]
    two = json.loads(render(HubConfig(workers=2), DataDir(tmp_path), sec))
    assert two["accounts"][ACCOUNT]["mappings"] == {
        HEARTBEAT_WILDCARD: heartbeat_partition_transform(2)
    }


def test_jwt_mode_maps_heartbeats_only_with_workers(tmp_path: Path) -> None:
    keys = natsjwt.HubKeys.generate()
    assert "mappings" not in _claims(natsjwt.account_jwt(keys, {}))["nats"]
    nats = _claims(natsjwt.account_jwt(keys, {}, partitions=3))["nats"]
    assert nats["mappings"] == {
        HEARTBEAT_WILDCARD: [{"subject": heartbeat_partition_transform(3), "weight": 100}]
    }
    # The preload in `signalbeam-hub nats`'s config carries it too.
    trust = operator_mode(DataDir(tmp_path), keys, {}, 3)
    preload = trust["resolver_preload"][keys.account_public]
    assert _claims(preload)["nats"]["mappings"] == nats["mappings"]


def test_the_audit_looks_for_a_devices_reports_under_every_partition_subject() -> None:
    assert stored_reports("dev-1") == "sb.dev.dev-1.>"

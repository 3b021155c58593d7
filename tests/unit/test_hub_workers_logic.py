"""The pure parts of hub workers: partitions, which ingest durables overlap, the lease
clock, and the `--worker` flag."""

from __future__ import annotations

import pytest

from hub.cli import parse_worker
from hub.errors import ConfigError
from hub.lease import LeaseClock
from hub.sync.ingest import DURABLE, consumer_config, filter_subjects, stale_durables
from hub.sync.streams import report_stream_config
from protocol.subjects import REPORT_WILDCARD, report_partition_of


def test_partition_matches_nats_server_partition_function() -> None:
    # nats-server's partition(4, 1) put "a".."h" in 0,1,2,3,0,1,2,3 (measured with 2.15.1).
    assert [report_partition_of(c, 4) for c in "abcdefgh"] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert all(report_partition_of(f"dev-{i}", 1) == 0 for i in range(20))


def test_one_hub_keeps_its_stream_and_consumer_as_before() -> None:
    assert report_stream_config().subject_transform is None
    cfg = consumer_config()
    assert cfg.durable_name == DURABLE and cfg.filter_subject == REPORT_WILDCARD
    assert cfg.filter_subjects is None


def test_workers_filter_their_partition_and_worker_0_the_leftovers() -> None:
    t = report_stream_config(4).subject_transform
    assert t is not None and "partition(4,1)" in t.dest
    assert filter_subjects(0) == ["sb.dev.*.report.0", REPORT_WILDCARD]
    assert filter_subjects(3) == ["sb.dev.*.report.3"]
    assert consumer_config(3).durable_name == f"{DURABLE}-p3"


def test_stale_durables() -> None:
    names = [DURABLE, f"{DURABLE}-p0", f"{DURABLE}-p1", f"{DURABLE}-p5", "other"]
    assert stale_durables(names, None, 1) == [f"{DURABLE}-p0", f"{DURABLE}-p1", f"{DURABLE}-p5"]
    assert stale_durables(names, 0, 4) == [DURABLE, f"{DURABLE}-p5"]
    assert stale_durables(names, 2, 4) == [DURABLE]


def test_lease_clock_gives_up_before_the_key_can_expire() -> None:
    clock = LeaseClock(ttl=6.0, safety=1.5)
    assert clock.expired(0.0)
    clock.renewed(100.0)
    assert not clock.expired(104.0)
    assert clock.expired(104.5)


def test_parse_worker() -> None:
    assert parse_worker(None, 1) == (None, 1)
    assert parse_worker("1/3", 1) == (1, 3)
    assert parse_worker("2", 4) == (2, 4)
    for bad, workers in (("3/3", 1), ("x", 2), ("0", 1), (None, 2)):
        with pytest.raises(ConfigError):
            parse_worker(bad, workers)

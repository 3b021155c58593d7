"""The heartbeat: ``sb.dev.<id>.heartbeat``, core NATS, best effort, latest state only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol import SCHEMA_VERSION
from protocol.codec import Fields, dumps, load
from protocol.errors import MessageError

MAX_HEARTBEAT_BYTES = 32 * 1024
MAX_CONTAINERS = 128
MAX_METRICS = 64
MAX_METRIC_NAME_LEN = 64


@dataclass(frozen=True)
class ContainerSummary:
    name: str
    state: str  # engine state: running, exited, created, restarting, paused...
    health: str | None = None  # healthy, unhealthy, starting, or None without a check

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "health": self.health}


@dataclass(frozen=True)
class Heartbeat:
    """Latest state only; never queued, sent every 30 s, so it is kept small (it is most of an
    idle device's upstream bytes): container counts plus only the containers that are not
    running-and-healthy, and a short host summary (``HEARTBEAT_METRICS``); full metrics travel
    as 1-minute rollups through the outbox. ``last_seq`` is the device's newest outbox
    sequence and ``outbox_pending`` its unsent rows, so the hub can show how far behind its
    copy is. Omitted fields take their defaults.
    """

    device_id: str
    ts: float
    agent_version: str
    bundle_ref: str | None = None  # "name@version" running now, None for none
    generation: int | None = None  # desired generation the device is running
    containers_total: int = 0
    containers_running: int = 0
    containers_unhealthy: int = 0
    containers: tuple[ContainerSummary, ...] = ()  # only the ones needing attention
    metrics: Mapping[str, float] = field(default_factory=dict)
    last_seq: int = 0
    outbox_pending: int = 0
    # Metered links: seconds until the next heartbeat (the hub's offline grace stretches to
    # three of them), the budget in bytes per day (None: not metered) and the bytes the
    # leaf link carried in the last 24 h (None: not measured, e.g. no own leaf).
    interval: float | None = None
    budget: int | None = None
    bytes_day: int | None = None
    # "Nothing changed since my last full heartbeat": only the identity, ``ts`` and
    # ``interval`` travel, and the hub keeps the summary (and delivery claim) it has. The
    # agent sends one while its summary is unchanged, a full one at least every few minutes.
    same: bool = False

    def change_key(self) -> tuple[Any, ...]:
        """What a "same" heartbeat stands for: everything but the time, the host metrics, the
        outbox position (rows are queued every minute; a full beat every few minutes carries
        it) and the traffic figures."""
        return (
            self.agent_version,
            self.bundle_ref,
            self.generation,
            self.containers_total,
            self.containers_running,
            self.containers_unhealthy,
            self.containers,
            self.budget,
        )

    def to_json(self) -> bytes:
        if self.same:
            return dumps(
                {
                    "v": SCHEMA_VERSION,
                    "device_id": self.device_id,
                    "ts": self.ts,
                    "same": True,
                    **({} if self.interval is None else {"interval": self.interval}),
                }
            )
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "device_id": self.device_id,
            "ts": self.ts,
            "agent_version": self.agent_version,
            "bundle_ref": self.bundle_ref,
            "generation": self.generation,
            "containers_total": self.containers_total,
            "containers_running": self.containers_running,
            "containers_unhealthy": self.containers_unhealthy,
            "containers": [c.to_dict() for c in self.containers],
            "metrics": dict(self.metrics),
            "last_seq": self.last_seq,
            "outbox_pending": self.outbox_pending,
            "interval": self.interval,
            "budget": self.budget,
            "bytes_day": self.bytes_day,
        }
        return dumps({k: v for k, v in doc.items() if v is not None and v != []})


HEARTBEAT_METRICS: tuple[str, ...] = (
    "cpu.percent",
    "mem.percent",
    "disk.percent",
    "load.1",
    "temp.celsius",
)


def decode_heartbeat(data: bytes | str, *, subject_device: str | None = None) -> Heartbeat:
    doc = Fields(load(data, MAX_HEARTBEAT_BYTES), "")
    device_id = doc.device_id()
    if subject_device is not None and device_id != subject_device:
        raise MessageError("device_id", f"{device_id!r} does not match the subject's device")
    containers = []
    for i, raw in enumerate(doc.list_("containers", required=False, max_len=MAX_CONTAINERS) or []):
        c = Fields(raw, f"containers[{i}]")
        containers.append(
            ContainerSummary(
                c.str_("name", max_len=128),
                c.str_("state", max_len=32),
                c.str_("health", required=False, max_len=32),
            )
        )
    metrics_obj = doc.obj("metrics", required=False)
    metrics: dict[str, float] = {}
    if metrics_obj is not None:
        if len(metrics_obj.doc) > MAX_METRICS:
            raise MessageError("metrics", f"must have at most {MAX_METRICS} entries")
        for k in metrics_obj.doc:
            if not isinstance(k, str) or not k or len(k) > MAX_METRIC_NAME_LEN:
                raise MessageError(
                    "metrics", f"metric name {k!r} must be 1-{MAX_METRIC_NAME_LEN} chars"
                )
            metrics[k] = metrics_obj.num(k)
    same = doc.doc.get("same") is True
    return Heartbeat(
        device_id=device_id,
        ts=doc.ts("ts"),
        # A "same" heartbeat leaves it out: the hub keeps the one it has.
        agent_version=doc.str_("agent_version", required=not same, max_len=64) or "",
        bundle_ref=doc.str_("bundle_ref", required=False, max_len=256),
        generation=doc.int_("generation", required=False),
        containers_total=doc.int_("containers_total", required=False) or 0,
        containers_running=doc.int_("containers_running", required=False) or 0,
        containers_unhealthy=doc.int_("containers_unhealthy", required=False) or 0,
        containers=tuple(containers),
        metrics=metrics,
        last_seq=doc.int_("last_seq", required=False) or 0,
        outbox_pending=doc.int_("outbox_pending", required=False) or 0,
        interval=doc.num("interval", required=False),
        budget=doc.int_("budget", required=False),
        bytes_day=doc.int_("bytes_day", required=False),
        same=same,
    )

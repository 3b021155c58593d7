"""How often the agent talks to the hub, from the device's data budget (pure, no I/O).

A device without a budget runs the default pacing; a metered one (``metered.budget`` from the
hub's desired document, else ``[metered] budget`` in the agent config) runs the first tier
whose estimated bytes per day fit the budget with headroom for events and changes. Tiers
give up, in this order: raw detail (metrics rows covering more than a minute), then
promptness of rollups (they wait longer to share one message), then heartbeat frequency,
and the leaf link's keepalive. Events are never held back or dropped: an event (or any row
that is not a metrics rollup) sends everything pending at once.

The estimate uses per-item costs measured on the wire of a live device through the leaf
(bench/bench_wire_bytes.py, docs/performance.md "Bytes on the wire"): TCP payload both ways,
after the leaf's S2 compression.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from protocol.reported import RowKind

DAY = 86_400.0

# Per-item wire costs (bytes, both directions, after compression), measured with
# bench/bench_wire_bytes.py on a loopback link and rounded up so the estimate of a whole day
# matches the day measured there (docs/performance.md "Bytes on the wire").
SAME_HEARTBEAT_COST = 360  # a "same" heartbeat and the hub's reply
FULL_HEARTBEAT_EXTRA = 140  # what a full heartbeat adds to that
REPORT_COST = 900  # one report message's envelope and its PubAck, beyond its rows
ROLLUP_ROW_COST = 90  # one metrics row inside a batched report (compresses with its peers)
PING_COST = 45  # one PING/PONG pair of the leaf link
POLL_COST = 450  # a safety-net read of the desired key
HUB_PING = 120.0  # the hub server's own ping interval towards its leaves (nats default)
IDLE_FACTOR = 2.0  # heartbeats stretch to this many intervals while nothing changes
FULL_EVERY = 600.0  # a full heartbeat at least this often (agent.sync.heartbeat)
HEADROOM = 0.7  # of the budget for the steady traffic; the rest is for events and changes

# Rows that may wait for company; everything else is sent at once and takes them along.
LINGERING_KINDS = frozenset({RowKind.METRICS_1M.value})


@dataclass(frozen=True)
class Pacing:
    heartbeat: float  # seconds between heartbeats while online
    flush: float  # seconds a metrics row may wait to share a message with later ones
    rollup_span: int  # seconds one upstream metrics row covers (60: every minute, full detail)
    desired_poll: float  # the safety-net read of the desired key (puts are prompted anyway)
    leaf_ping: float  # the leaf link's keepalive interval
    budget: int | None = None  # bytes per day; None: not metered
    tier: int = 0

    def estimate(self) -> float:
        """Steady bytes per day on the wire for an idle device at this pacing."""
        beats = DAY / (self.heartbeat * IDLE_FACTOR)
        fulls = DAY / max(FULL_EVERY, self.heartbeat * IDLE_FACTOR)
        pings = DAY / self.leaf_ping + DAY / HUB_PING
        return (
            beats * SAME_HEARTBEAT_COST
            + fulls * FULL_HEARTBEAT_EXTRA
            + DAY / max(self.flush, self.rollup_span) * REPORT_COST
            + DAY / self.rollup_span * ROLLUP_ROW_COST
            + pings * PING_COST
            + DAY / self.desired_poll * POLL_COST
        )

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "estimate": round(self.estimate())}


DEFAULT = Pacing(heartbeat=30.0, flush=600.0, rollup_span=60, desired_poll=900.0, leaf_ping=120.0)
# Tiers for a metered device, least frugal first.
TIERS: tuple[Pacing, ...] = (
    Pacing(heartbeat=60.0, flush=900.0, rollup_span=300, desired_poll=1800.0, leaf_ping=300.0),
    Pacing(heartbeat=300.0, flush=3600.0, rollup_span=900, desired_poll=3600.0, leaf_ping=600.0),
    Pacing(heartbeat=600.0, flush=3600.0, rollup_span=3600, desired_poll=7200.0, leaf_ping=1200.0),
    Pacing(
        heartbeat=1800.0, flush=4 * 3600.0, rollup_span=3600, desired_poll=4 * 3600.0,
        leaf_ping=1800.0,
    ),
)  # fmt: skip


def pacing_for(
    budget: int | None,
    *,
    heartbeat: float = DEFAULT.heartbeat,
    desired_poll: float = DEFAULT.desired_poll,
) -> Pacing:
    """The pacing for a budget in bytes per day (None: the defaults, with the configured
    heartbeat and desired-read intervals). A budget the defaults fit keeps the defaults."""
    base = replace(DEFAULT, heartbeat=heartbeat, desired_poll=desired_poll)
    if budget is None:
        return base

    def within(p: Pacing, tier: int) -> Pacing:
        # A tier never goes faster than the configured intervals (a slower config wins).
        return replace(
            p,
            heartbeat=max(p.heartbeat, heartbeat),
            desired_poll=max(p.desired_poll, desired_poll),
            budget=budget,
            tier=tier,
        )

    for tier, p in enumerate((base, *TIERS)):
        paced = within(p, tier)
        if paced.estimate() <= budget * HEADROOM:
            return paced
    return within(TIERS[-1], len(TIERS))


def should_send(kinds: list[str], oldest: float, now: float, flush: float) -> bool:
    """Whether pending rows (their kinds, the oldest one's time) are sent now: at once when
    any is not a lingering kind (an event, a state change), else once the oldest has waited
    ``flush`` seconds."""
    if not kinds:
        return False
    if any(k not in LINGERING_KINDS for k in kinds):
        return True
    return now - oldest >= flush


class LinkUsage:
    """Bytes over the last 24 h from samples of a cumulative counter that starts again at 0
    when the leaf server restarts (then the new value is all new traffic)."""

    def __init__(self, window: float = DAY) -> None:
        self.window = window
        self._last: int | None = None
        self._points: list[tuple[float, int]] = []  # (time, bytes since the previous sample)
        self._seen = 0

    def sample(self, now: float, total: int) -> None:
        delta = total if self._last is None or total < self._last else total - self._last
        if self._last is None:
            delta = 0  # what came before the first sample is not attributed to any time
        self._last = total
        self._seen += 1
        self._points.append((now, delta))
        cutoff = now - self.window
        while self._points and self._points[0][0] < cutoff:
            self._points.pop(0)

    def last_day(self) -> int | None:
        """Bytes in the window; None before two samples (nothing measured yet)."""
        if self._seen < 2:
            return None
        return sum(d for _, d in self._points)

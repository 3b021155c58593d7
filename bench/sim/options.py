"""``SimOptions``: what a simulated fleet looks like, validated on construction."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from protocol.enroll import validate_tags
from protocol.errors import MessageError
from protocol.subjects import valid_device_id

_PREFIX_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40})?$")
MAX_PER_DEVICE_CONNECTIONS = 2000  # one Python process; beyond this use shared connections
# The hub's offline grace (``--offline-grace``) for a simulated fleet in a test that is not
# about presence. A starved machine (load 12 on 2 cores) delays heartbeats by seconds, and
# the simulator's heartbeats share an event loop with whatever the test drives (a whole
# Textual app): with a grace of a few seconds a device went offline mid-test. No starvation
# lasts this long inside a bounded test; presence tests keep a short grace of their own.
UNBEATABLE_GRACE_S = 3600


class SimError(Exception):
    """Any simulator failure; ``field`` names the bad option when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass(frozen=True)
class SimOptions:
    """A fleet of ``count`` devices ``<prefix>-0000`` … speaking the device protocol.

    ``hub_url``: the hub's NATS *client* URL (``nats://host:port``). Devices connect there
    straight, as an agent in direct mode does (no leaf nats-server per device: the hub sees
    the same subjects, users and permissions a leaf link carries). For enrollment the URL may
    carry the bootstrap user (``nats://enroll:<pw>@host:port``, what ``signalbeam-hub init``
    prints as ``enroll_url``); otherwise ``enroll_password`` is used with ``enroll_user``.

    ``connections``: 0 (default) gives each device its own connection with its own enrolled
    credentials. N > 0 multiplexes every device over N shared connections logged in as
    ``shared_user``/``shared_password`` (for benchmarks of tens of thousands of devices; see
    docs/performance.md for what differs). ``enroll``: False when the devices already exist
    on the hub (a benchmark's bulk path); only valid with shared connections.
    """

    hub_url: str
    token: str = ""
    count: int = 3
    prefix: str = "sim"
    tags: tuple[str, ...] = ()
    heartbeat_s: float = 30.0
    rollup_s: float = 60.0
    # Seconds a metrics row may wait to share a report with later ones (the agent's pacing
    # ``flush``: 600 by default, agent/sync/pacing.py). 0: each rollup is sent at once, one
    # report message per device-minute (what the simulator always did; tests keep it).
    # Any other row (an event, a deployment) sends everything pending at once, as the agent.
    flush_s: float = 0.0
    apply_s: float = 0.2
    fail_versions: frozenset[str] = field(default_factory=frozenset)
    # None: a failing version's deployment just fails. A number: the device rolls back as a
    # real agent does (the deployment ``rolled_back``, then after this many seconds the
    # previous healthy one is written ``healthy`` again, the newest row); 0 puts both rows
    # in one report batch, before the hub's next rollout tick.
    rollback_s: float | None = None
    enroll_user: str = "enroll"
    enroll_password: str | None = None
    enroll_concurrency: int = 8
    connections: int = 0
    shared_user: str | None = None
    shared_password: str | None = None
    enroll: bool = True
    first_index: int = 0
    backfill_minutes: int = 30  # rollups sent at start so a sparkline has a history at once
    jitter: bool = True  # spread the first heartbeat/rollup over one interval
    # Bring the devices online one by one over this many seconds instead of all in start()
    # (shared connections only): a real fleet's reconnects spread out, and a benchmark that
    # adds tens of thousands of devices in one second measures its own burst, not the hub.
    ramp_s: float = 0.0
    seed: int = 0
    id_digits: int = 4  # device ids are <prefix>-<index, zero-padded to this many digits>

    def __post_init__(self) -> None:
        parts = urlsplit(self.hub_url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("nats", "tls") or not parts.hostname or not port:
            raise SimError(f"must be nats://host:port, got {self.hub_url!r}", "hub_url")
        if not isinstance(self.count, int) or self.count < 1:
            raise SimError("must be a positive integer", "count")
        if not 1 <= self.id_digits <= 12:
            raise SimError("must be between 1 and 12", "id_digits")
        if not _PREFIX_RE.match(self.prefix):
            raise SimError("must be lower-case letters, digits, '-' (≤ 41)", "prefix")
        if not valid_device_id(self.device_id(self.first_index + self.count - 1)):
            raise SimError("prefix and count make an invalid device id", "prefix")
        try:
            object.__setattr__(self, "tags", validate_tags(tuple(self.tags)))
        except MessageError as exc:
            raise SimError(exc.message, exc.field) from None
        for name in ("heartbeat_s", "rollup_s"):
            if not 0.05 <= getattr(self, name) <= 3600:
                raise SimError("must be between 0.05 and 3600 seconds", name)
        if not 0 <= self.flush_s <= 4 * 3600:
            raise SimError("must be between 0 and 14400 seconds", "flush_s")
        if not 0 <= self.apply_s <= 600:
            raise SimError("must be between 0 and 600 seconds", "apply_s")
        if self.rollback_s is not None and not 0 <= self.rollback_s <= 600:
            raise SimError("must be between 0 and 600 seconds", "rollback_s")
        for ref in self.fail_versions:
            if "@" not in ref:
                raise SimError(f"{ref!r} is not bundle@version", "fail_versions")
        object.__setattr__(self, "fail_versions", frozenset(self.fail_versions))
        if not 1 <= self.enroll_concurrency <= 64:
            raise SimError("must be between 1 and 64", "enroll_concurrency")
        if not 0 <= self.connections <= 64:
            raise SimError("must be between 0 and 64", "connections")
        if self.connections == 0:
            if self.count > MAX_PER_DEVICE_CONNECTIONS:
                raise SimError(
                    f"more than {MAX_PER_DEVICE_CONNECTIONS} per-device connections in one "
                    "process; set connections (shared) for big fleets",
                    "count",
                )
            if not self.enroll:
                raise SimError("per-device connections need enrollment", "enroll")
        elif not self.shared_user:
            raise SimError("required with shared connections", "shared_user")
        if self.enroll and not self.token:
            raise SimError("a registration token is required to enroll", "token")
        if self.enroll and not parts.username and self.enroll_password is None:
            raise SimError(
                "give the bootstrap password in the URL (nats://enroll:PW@host:port) "
                "or as enroll_password",
                "hub_url",
            )
        if not 0 <= self.backfill_minutes <= 1440:
            raise SimError("must be between 0 and 1440", "backfill_minutes")
        if self.first_index < 0:
            raise SimError("must be ≥ 0", "first_index")
        if not 0 <= self.ramp_s <= 3600:
            raise SimError("must be between 0 and 3600 seconds", "ramp_s")
        if self.ramp_s and not self.connections:
            raise SimError("a ramp needs shared connections", "ramp_s")

    def device_id(self, index: int) -> str:
        return f"{self.prefix}-{index:0{self.id_digits}d}"

    @property
    def ids(self) -> list[str]:
        return [self.device_id(i) for i in range(self.first_index, self.first_index + self.count)]

    @property
    def server_url(self) -> str:
        """``hub_url`` without credentials."""
        p = urlsplit(self.hub_url)
        host = f"[{p.hostname}]" if p.hostname and ":" in p.hostname else p.hostname
        return f"{p.scheme}://{host}:{p.port}"

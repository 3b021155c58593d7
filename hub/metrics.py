"""The hub's Prometheus metrics, in a registry of its own (not the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.api_requests = Counter(
            "signalbeam_api_requests",
            "Operator API requests by verb and result code",
            ["verb", "code"],
            registry=self.registry,
        )
        self.api_seconds = Histogram(
            "signalbeam_api_request_seconds",
            "Operator API request handling time",
            ["verb"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.devices = Gauge(
            "signalbeam_devices", "Devices by status", ["status"], registry=self.registry
        )
        self.child_restarts = Counter(
            "signalbeam_child_restarts",
            "Restarts of supervised child processes",
            ["child"],
            registry=self.registry,
        )
        # Devices moved out at start because their id cannot be a NATS user (issue 19).
        self.quarantined_devices = Gauge(
            "signalbeam_quarantined_devices",
            "Devices quarantined (table quarantined_devices; device.quarantined events)",
            registry=self.registry,
        )
        self.child_up = Gauge(
            "signalbeam_child_up",
            "1 while a supervised child runs",
            ["child"],
            registry=self.registry,
        )

        # --- sync (issue 5) ---
        self.sync_messages = Counter(
            "signalbeam_sync_messages",
            "Device messages received, by subject kind (report, heartbeat, enroll) and result",
            ["kind", "result"],
            registry=self.registry,
        )
        self.sync_bad = Counter(
            "signalbeam_sync_bad_messages",
            "Device messages dropped as invalid, by subject kind and reason code",
            ["kind", "code"],
            registry=self.registry,
        )
        self.sync_rows = Counter(
            "signalbeam_sync_rows",
            "Report rows by outcome: applied, replayed (already applied), skipped (malformed)",
            ["outcome"],
            registry=self.registry,
        )
        self.sync_gaps = Counter(
            "signalbeam_sync_gaps",
            "Sequence gaps detected in device reports",
            registry=self.registry,
        )
        self.sync_naks = Counter(
            "signalbeam_sync_naks",
            "Report batches postponed because an earlier batch had not arrived",
            registry=self.registry,
        )
        self.sync_lost_rows = Counter(
            "signalbeam_sync_lost_rows",
            "Rows a device's heartbeat says the stream acknowledged that never reached the hub",
            registry=self.registry,
        )
        self.sync_store_resets = Counter(
            "signalbeam_sync_store_resets",
            "Devices whose store began again (a new store epoch), their rows applied anew",
            registry=self.registry,
        )
        self.sync_poison = Counter(
            "signalbeam_sync_poison_messages",
            "Report messages that raised while applied and were rolled back alone",
            registry=self.registry,
        )
        self.sync_ingest_failures = Counter(
            "signalbeam_sync_ingest_failures",
            "Fetches whose transaction failed as a whole (store errors); all redelivered",
            registry=self.registry,
        )
        self.sync_batch_seconds = Histogram(
            "signalbeam_sync_ingest_batch_seconds",
            "Time to apply one fetched batch of reports (one SQLite transaction)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.desired_writes = Counter(
            "signalbeam_desired_writes", "Desired documents written to KV", registry=self.registry
        )
        self.enrollments = Counter(
            "signalbeam_enrollments",
            "Enrollment requests by result code",
            ["result"],
            registry=self.registry,
        )
        self.enroll_reloads = Counter(
            "signalbeam_enroll_reloads",
            "nats-server config rewrites + reloads for enrollments (a burst shares one)",
            registry=self.registry,
        )
        self.device_jwt = Counter(
            "signalbeam_device_jwt",
            "Device JWTs by outcome (issued at enrollment, renewed, migrated from a password,"
            " revoked, refused)",
            ["outcome"],
            registry=self.registry,
        )
        self.device_rpc = Counter(
            "signalbeam_device_rpc",
            "Device RPC calls by verb and result code",
            ["verb", "result"],
            registry=self.registry,
        )
        self.presence = Counter(
            "signalbeam_presence_changes",
            "Devices marked online/offline",
            ["status"],
            registry=self.registry,
        )

        # --- retention (hub/retention.py) ---
        self.retention_deleted = Counter(
            "signalbeam_retention_deleted_rows",
            "Rows deleted by retention, by table (metrics_1m, metrics_1h, events)",
            ["table"],
            registry=self.registry,
        )
        self.retention_passes = Counter(
            "signalbeam_retention_passes",
            "Retention passes by result (ok, error)",
            ["result"],
            registry=self.registry,
        )
        self.retention_chunk_seconds = Histogram(
            "signalbeam_retention_chunk_seconds",
            "Time one retention chunk (one SQLite transaction) held the store's writer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        # Present from the start, so a dashboard sees 0 rather than no series before a pass.
        for table in ("metrics_1m", "metrics_1h", "events"):
            self.retention_deleted.labels(table)

    def observe_api(self, verb: str, code: str, seconds: float) -> None:
        self.api_requests.labels(verb, code).inc()
        self.api_seconds.labels(verb).observe(seconds)

    def set_device_counts(self, counts: dict[str, int]) -> None:
        self.devices.clear()
        for status, n in counts.items():
            self.devices.labels(status).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)

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
        self.child_up = Gauge(
            "signalbeam_child_up",
            "1 while a supervised child runs",
            ["child"],
            registry=self.registry,
        )

    def observe_api(self, verb: str, code: str, seconds: float) -> None:
        self.api_requests.labels(verb, code).inc()
        self.api_seconds.labels(verb).observe(seconds)

    def set_device_counts(self, counts: dict[str, int]) -> None:
        self.devices.clear()
        for status, n in counts.items():
            self.devices.labels(status).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)

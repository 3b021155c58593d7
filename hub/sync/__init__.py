"""The hub side of device sync (issue 5): the report stream and its ingest, the ``desired``
KV writer, enrollment with per-device NATS users, presence from heartbeats, and device RPC.
See docs/sync.md ("The hub side") and docs/hub.md."""

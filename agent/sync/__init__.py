"""Device <-> hub sync over NATS: uplink (outbox -> hub stream), downlink (desired KV ->
store), heartbeats, device RPC, enrollment and the supervised leaf nats-server.

``SyncService`` (agent.sync.service) is the one object the daemon starts and stops; the wire
contract lives in ``protocol`` (one module per message family) and docs/sync.md.
"""

"""The SignalBeam hub: fleet store, operator API, supervised nats-server and litestream."""

__version__ = "0.1.0"

"""The SignalBeam hub: fleet store, operator API, supervised nats-server and litestream."""

from sbutil.cli import VERSION as __version__

__all__ = ["__version__"]

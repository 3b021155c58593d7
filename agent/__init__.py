"""The SignalBeam Edge device agent: store, metrics, engines, reconciler, sync, local API."""

from sbutil.cli import VERSION as __version__

# What the agent says it is (heartbeats, the local API, its start event): the package version,
# defined here once (it was a constant in agent.daemon and another in agent.sync.heartbeat).
AGENT_VERSION = __version__

__all__ = ["AGENT_VERSION", "__version__"]

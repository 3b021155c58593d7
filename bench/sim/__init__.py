"""Fleet simulator: many devices speaking the real device protocol to a real hub.

See docs/performance.md ("The fleet simulator") for what it does and how it differs from
real devices.
"""

from bench.sim.fleet import SimFleet
from bench.sim.options import UNBEATABLE_GRACE_S, SimError, SimOptions

__all__ = ["UNBEATABLE_GRACE_S", "SimError", "SimFleet", "SimOptions"]

"""Parsers for the human-friendly scalar units a bundle allows: memory sizes (durations
are ``sbutil.duration``, the grammar every setting shares).

Each returns the value or raises ``ValueError`` with a message meant for the operator; the
validator attaches the field path.
"""

from __future__ import annotations

import re
from typing import Any

# Kubernetes conventions: an "i" means powers of 1024; without it powers of 1000. Docker's
# lower-case "m" (MiB) is deliberately absent because Kubernetes reads "m" as milli.
_MEMORY_UNIT = {
    "": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_MEMORY = re.compile(r"(\d{1,15})(Ki|Mi|Gi|Ti|k|K|M|G|T)?")
_UNIT_SUFFIX = re.compile(r"\d+([A-Za-z]+)")
_FRACTION = re.compile(r"\d*\.\d+\s*[A-Za-z]*")

MEMORY_HELP = (
    'bytes (an integer) or a size like "64Mi", "128M", "1Gi" (units k K M G T Ki Mi Gi Ti)'
)


def parse_memory(value: Any) -> int:
    """Bytes from an integer or a string such as ``"64Mi"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _MEMORY.fullmatch(value.strip())
        if m:
            return int(m.group(1)) * _MEMORY_UNIT[m.group(2) or ""]
        if _FRACTION.fullmatch(value.strip()):
            raise ValueError("must be a whole number of units, e.g. 1536Mi rather than 1.5Gi")
        unit = _UNIT_SUFFIX.fullmatch(value.strip())
        if unit:
            raise ValueError(
                f"unit {unit.group(1)!r} is not accepted; use k K M G T (powers of 1000) "
                "or Ki Mi Gi Ti (powers of 1024), e.g. 64Mi"
            )
    raise ValueError(f"must be {MEMORY_HELP}")

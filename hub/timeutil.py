"""Timestamps as the hub stores them."""

from __future__ import annotations

import time


def now_iso(ts: float | None = None) -> str:
    """UTC timestamp with fixed width, so string order is time order in SQL."""
    t = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"

"""Dry runs: do a write for real inside a transaction that is always rolled back.

Running the very same code as the real write is the only way "validate everything" stays
true as the write's checks change. Nothing is committed (SQLite discards the rolled-back
pages) and the handler returns no change notices, so nothing is published either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from hub.store import Store

T = TypeVar("T")
SAMPLE = 20


class _Undo(Exception):
    pass


def rehearse(store: Store, write: Callable[[], T]) -> T:
    """``write()``'s result, with everything it wrote rolled back."""
    if store._depth:
        raise RuntimeError("a dry run must own its transaction")  # an outer one would commit
    result: list[T] = []
    try:
        with store.tx():
            result.append(write())
            raise _Undo
    except _Undo:
        pass
    return result[0]


@contextmanager
def quiet(logger: logging.Logger) -> Iterator[None]:
    """Silence a logger that would announce a rehearsed write as done. Safe because every
    store write runs on the store's one worker thread."""
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def result(devices: Sequence[str]) -> dict[str, Any]:
    ordered = sorted(devices)
    return {"dry_run": True, "devices": len(ordered), "sample": ordered[:SAMPLE]}

"""The agent's engine retry schedule at start (pure)."""

from __future__ import annotations

import pytest

from agent.daemon import engine_probe_timeout, engine_retry_delay


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (7, 30.0), (100, 30.0)],
)
def test_retry_delay_doubles_from_one_second_to_a_cap(failures: int, delay: float) -> None:
    assert engine_retry_delay(failures) == delay


@pytest.mark.parametrize(
    ("attempt", "timeout"), [(1, 3.0), (2, 6.0), (3, 12.0), (4, 15.0), (50, 15.0)]
)
def test_probe_timeout_grows_so_a_slow_engine_is_still_found(attempt: int, timeout: float) -> None:
    assert engine_probe_timeout(attempt) == timeout

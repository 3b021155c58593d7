"""What a bcrypt password costs a NATS login (hub/natsconf.py stores and renders bcrypt).

One nats-server on 127.0.0.1 with three users: a plain password (the baseline, what the hub
rendered before issue 19), bcrypt at cost 4 (what it renders now) and bcrypt at cost 10 (the
library default). For each: ``CONNECTS`` sequential connect + close, timed. A fleet that
reconnects after a hub restart pays this once per device.

    python -m bench.bench_nats_login
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import bcrypt
import nats

from tests.harness.nats import NatsHub

CONNECTS = 200
PASSWORD = "x" * 43  # the agent's password length (secrets.token_urlsafe(32))


def _users() -> dict[str, str]:
    return {
        "plain": PASSWORD,
        "bcrypt4": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4, b"2a")).decode(),
        "bcrypt10": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10, b"2a")).decode(),
    }


async def _logins(url: str, user: str) -> list[float]:
    times = []
    for _ in range(CONNECTS):
        t0 = time.perf_counter()
        nc = await nats.connect(url, user=user, password=PASSWORD, allow_reconnect=False)
        times.append(time.perf_counter() - t0)
        await nc.close()
    return times


async def main() -> None:
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    users = _users()
    accounts = {
        "accounts": {"A": {"users": [{"user": u, "password": pw} for u, pw in users.items()]}}
    }
    with tempfile.TemporaryDirectory() as tmp:
        hub = NatsHub(Path(tmp), extra_conf=json.dumps(accounts)[1:-1])
        try:
            for user in users:  # the plain one first: the same-run baseline
                times = await _logins(hub.url, user)
                p50 = statistics.median(times) * 1000
                p99 = sorted(times)[int(len(times) * 0.99) - 1] * 1000
                print(f"{user:9s} {CONNECTS} logins: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
        finally:
            hub.stop()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())

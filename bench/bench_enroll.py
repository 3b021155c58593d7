"""Enrollment rate and connect storm, JWT mode beside the password (reload) mode, same run.

    python -m bench.bench_enroll                       # 300 enrollments per level, storm of 300
    python -m bench.bench_enroll --per-level 500 --storm 500

Two real hubs (``signalbeam-hub init --nats-auth jwt`` and ``--nats-auth password``), one
after the other. For each mode and each in-flight level (8, 32, 128): ``--per-level``
enrollments through the hub's real path (what the agent's ``enroll()`` sends: a bootstrap
login, the request with a device-made nkey and password, the reply), at most that many in
flight; enrollments/s and request p50/p99 (login included), and nats-server config
writes seen. Then the connect storm: ``--storm`` of the enrolled devices log in at once
(each its own login straight to the client port, as a device's leaf does to the leafnode
port) after the hub restarts; seconds until every one is connected. Load average printed
with every line. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats

from agent.sync.enroll import LOGIN_ATTEMPTS, LOGIN_RETRY_DELAY, hub_url, new_device_password
from bench.sim.benchhub import BenchHub, loadavg, pct
from protocol import natsauth
from protocol.enroll import DeviceFacts, EnrollReply, EnrollRequest, decode_enroll_reply
from protocol.subjects import ENROLL, INBOX_ENROLL
from sbutil.tasks import wait_for
from tui.client import HubClient

FACTS = DeviceFacts("bench", "x86_64", "Linux", "podman", "0.1.0-bench")
LEVELS = (8, 32, 128)
TIMEOUT = 600.0  # each phase's bound


STATS = {"retries": 0}  # login retries (a password-mode reload drops logins)


async def _quiet(_: Exception) -> None:
    return None


async def enroll_one(url: str, token: str, device_id: str) -> EnrollReply:
    """What ``agent.sync.enroll.enroll`` sends, without its per-call TLS context and retry
    bookkeeping (the load generator shares the 2 cores with the hub): a bootstrap login,
    a device-made key and password, the request, the reply."""
    for attempt in range(LOGIN_ATTEMPTS):
        try:
            nc = await nats.connect(
                url, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=30,
                inbox_prefix=INBOX_ENROLL, error_cb=_quiet, **natsauth.auth_options(url),
            )  # fmt: skip
            break
        except Exception:
            # As the agent does: a password-mode reload drops the logins in progress.
            if attempt == LOGIN_ATTEMPTS - 1:
                raise
            STATS["retries"] += 1
            await asyncio.sleep(LOGIN_RETRY_DELAY * (attempt + 1))
    try:
        seed, password = natsauth.new_seed("user"), new_device_password()
        body = EnrollRequest(
            token, device_id, FACTS, nats_password=password,
            nats_public_key=natsauth.public_key(seed),
        ).to_json()  # fmt: skip
        reply = decode_enroll_reply((await nc.request(ENROLL, body, timeout=120)).data)
    finally:
        await nc.close()
    # The device keeps what it made: its seed (JWT mode) or its password.
    if reply.nats_jwt:
        return replace(reply, nats_seed=seed)
    return replace(reply, nats_password=password)


async def enroll_level(
    hub: BenchHub, token: str, prefix: str, n: int, in_flight: int
) -> tuple[list[EnrollReply], list[float], int]:
    gate = asyncio.Semaphore(in_flight)
    times: list[float] = []
    failed = 0
    url = hub_url(hub.enroll_url)

    async def one(i: int) -> EnrollReply | None:
        nonlocal failed
        async with gate:
            t0 = time.perf_counter()
            try:
                r = await enroll_one(url, token, f"{prefix}-{i:05d}")
            except Exception:
                failed += 1
                return None
            times.append(time.perf_counter() - t0)
            return r

    out = await wait_for(asyncio.gather(*(one(i) for i in range(n))), TIMEOUT)
    return [r for r in out if r is not None], times, failed


async def storm(hub: BenchHub, creds: list[EnrollReply]) -> tuple[float, int]:
    """All log in at once; seconds until every one is connected (each tries until then)."""
    url = hub.client_url
    conns: list[Any] = []

    async def one(c: EnrollReply) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                nc = await nats.connect(
                    url, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=10,
                    inbox_prefix=f"_INBOX.{c.device_id}", error_cb=_quiet, **natsauth.enrolled_login(c),
                )  # fmt: skip
                await nc.flush(timeout=30)
                conns.append(nc)
                return
            except Exception:
                await asyncio.sleep(0.5)

    t0 = time.perf_counter()
    await wait_for(asyncio.gather(*(one(c) for c in creds)), TIMEOUT)
    took = time.perf_counter() - t0
    linked = sum(1 for nc in conns if nc.is_connected)
    for nc in conns:
        await nc.close()
    return took, linked


async def run_mode(mode: str, args: argparse.Namespace, work: Path) -> None:
    hub = BenchHub(work / f"hub-{mode}", init_flags=("--nats-auth", mode))
    conf = hub.data / "nats" / "nats-server.conf"
    enrolled: list[EnrollReply] = []
    try:
        async with HubClient(hub.url, hub.admin_key, timeout=60) as admin:
            uses = args.per_level * len(LEVELS) + 1
            token = (await admin.call("tokens.create", {"tenant": "b", "max_uses": uses}))["token"]
            for level in LEVELS:
                STATS["retries"] = 0
                writes0 = conf.stat().st_mtime_ns
                t0 = time.perf_counter()
                got, times, failed = await enroll_level(
                    hub, token, f"{mode[0]}{level}", args.per_level, level
                )
                took = time.perf_counter() - t0
                enrolled += got
                print(
                    f"{mode:8} {level:3} in flight: {len(got)} enrolled in {took:.1f} s"
                    f" ({len(got) / took:.1f}/s), p50 {pct(times, 50):.3f} s"
                    f" p99 {pct(times, 99):.3f} s, failed {failed}, login retries {STATS['retries']},"
                    f" config rewritten: {'yes' if conf.stat().st_mtime_ns != writes0 else 'no'},"
                    f" load {loadavg()}",
                    flush=True,
                )
        sample = enrolled[: args.storm]
        hub.stop()
        hub.start()
        took, linked = await storm(hub, sample)
        print(
            f"{mode:8} connect storm after a hub restart: {linked}/{len(sample)} logged in"
            f" in {took:.1f} s ({linked / took:.0f}/s), load {loadavg()}",
            flush=True,
        )
    finally:
        hub.stop()


async def run(args: argparse.Namespace, work: Path) -> None:
    print(f"load average before: {loadavg()}")
    for mode in ("password", "jwt"):  # password first: the baseline of the same run
        await run_mode(mode, args, work)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--per-level", type=int, default=300)
    p.add_argument("--storm", type=int, default=300)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-bench-enroll-"))
    try:
        asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

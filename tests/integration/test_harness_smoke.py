"""Smoke tests proving each harness fixture drives the real thing and cleans up after itself."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from tests.harness.engines import EngineHandle, run_cli
from tests.harness.nats import NatsHub, NatsLeaf
from tests.harness.ports import free_port, wait_for_port
from tests.harness.registry import Registry
from tests.harness.wait import eventually


async def test_leaf_publish_reaches_hub_and_cut_restore(
    nats_hub: NatsHub, nats_leaf: Callable[[str], NatsLeaf]
) -> None:
    leaf = nats_leaf("dev-1")
    hub_nc = await nats.connect(nats_hub.url)
    leaf_nc = await nats.connect(leaf.url, max_reconnect_attempts=-1)
    try:
        received: list[bytes] = []

        async def collect(msg: Msg) -> None:
            received.append(msg.data)

        await hub_nc.subscribe("sb.smoke", cb=collect)

        async def echo(msg: Msg) -> None:
            await msg.respond(b"pong")

        await hub_nc.subscribe("sb.smoke.rpc", cb=echo)
        await hub_nc.flush()

        async def request_ok() -> bool:
            reply = await leaf_nc.request("sb.smoke.rpc", b"ping", timeout=1)
            return reply.data == b"pong"

        # Interest propagates to the leaf asynchronously.
        await eventually(request_ok, tolerate=(Exception,))
        await leaf_nc.publish("sb.smoke", b"one")
        await leaf_nc.flush()
        await eventually(lambda: _true_async(received == [b"one"]), tolerate=(Exception,))

        leaf.cut()

        async def link_down() -> bool:
            return not leaf.linked()

        await eventually(link_down, tolerate=(Exception,))
        await leaf_nc.publish("sb.smoke", b"lost")
        await leaf_nc.flush()
        with pytest.raises(NoRespondersError):
            await leaf_nc.request("sb.smoke.rpc", b"ping", timeout=2)

        leaf.restore()
        await eventually(request_ok, timeout=20, tolerate=(Exception,))
        await leaf_nc.publish("sb.smoke", b"two")
        await leaf_nc.flush()
        await eventually(lambda: _true_async(received[-1:] == [b"two"]), tolerate=(Exception,))
        assert b"lost" not in received
    finally:
        await leaf_nc.close()
        await hub_nc.close()


async def _true_async(value: bool) -> bool:
    return value


def test_hub_and_leaf_processes_stop_by_pid(tmp_path: Path) -> None:
    hub = NatsHub(tmp_path / "hub")
    leaf = NatsLeaf(hub, "dev-x", tmp_path / "leaf")
    assert hub.leaf_count() == 1
    pids = (hub.proc.pid, leaf.proc.pid)
    leaf.stop()
    hub.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.engine
def test_pulled_image_runs_and_answers(engine: EngineHandle, registry: Registry) -> None:
    port = free_port()
    foreign_port = free_port()
    # A container without our labels must survive the fixture's cleanup.
    foreign = run_cli(
        engine,
        "run",
        "-d",
        "--network",
        "host",
        "-e",
        f"PORT={foreign_port}",
        registry.ref("sbtest/hello:1.0"),
    ).strip()
    try:
        run_cli(engine, "pull", registry.ref("sbtest/hello:2.0"))
        run_cli(
            engine,
            "run",
            "-d",
            "--network",
            "host",
            "-e",
            f"PORT={port}",
            "--label",
            "sbtest.owner=smoke",
            registry.ref("sbtest/hello:2.0"),
        )
        wait_for_port(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.read() == b"2.0"
        assert engine.remove_test_containers() == 1
        ids = [c["Id"] for c in engine.containers()]
        assert any(i.startswith(foreign[:12]) for i in ids)
    finally:
        run_cli(engine, "rm", "-f", foreign)

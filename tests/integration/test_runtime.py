"""The engine adapters against real Podman and Docker (the harness's private engines)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.errors import EngineError, EngineUnavailable, PullError
from agent.runtime import connect
from agent.runtime import detect as detect_mod
from agent.runtime.base import (
    LABEL_BUNDLE,
    LABEL_DEVICE,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    CreateRequest,
    Engine,
    EngineEvent,
    PullProgress,
)
from tests.harness.engines import EngineHandle
from tests.harness.ports import free_port, wait_for_port
from tests.harness.registry import Registry

pytestmark = pytest.mark.engine


def labels(device: str, service: str = "web") -> dict[str, str]:
    return {
        LABEL_DEVICE: device,
        LABEL_BUNDLE: "rt",
        LABEL_VERSION: "1.0.0",
        LABEL_SERVICE: service,
        LABEL_SPEC_HASH: "0123456789abcdef",
    }


@pytest.fixture
async def eng(engine: EngineHandle) -> AsyncIterator[Engine]:
    e = connect(f"rt-{uuid.uuid4().hex[:8]}", engine.url)
    try:
        yield e
    finally:
        await e.close()


async def test_connect_detects_the_engine_kind(engine: EngineHandle, eng: Engine) -> None:
    assert eng.kind == engine.kind
    info = await eng.info()
    assert info.kind == engine.kind and info.version
    free = await eng.disk_free()
    assert free is not None and free > 0


def test_no_engine_names_every_socket_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        detect_mod, "DEFAULT_SOCKETS", (str(tmp_path / "a.sock"), str(tmp_path / "b.sock"))
    )
    env = {"DOCKER_HOST": f"unix://{tmp_path}/env.sock", "XDG_RUNTIME_DIR": str(tmp_path / "x")}
    with pytest.raises(EngineUnavailable) as err:
        connect("d", env=env)
    tried = err.value.tried
    assert tried == [
        f"unix://{tmp_path}/env.sock",
        f"unix://{tmp_path}/a.sock",
        f"unix://{tmp_path}/b.sock",
        f"unix://{tmp_path}/x/podman/podman.sock",
    ]
    assert all(t in str(err.value) for t in tried)
    with pytest.raises(EngineUnavailable) as one:
        connect("d", str(tmp_path / "explicit.sock"), env=env)
    assert one.value.tried == [f"unix://{tmp_path}/explicit.sock"]  # no silent fallback


async def test_pull_reports_progress_and_fails_clearly(eng: Engine, registry: Registry) -> None:
    image = registry.ref("sbtest/pull:1.0")  # has a layer of its own: a pull moves bytes
    await eng.remove_image(image)
    seen: list[PullProgress] = []
    await eng.pull(image, progress=seen.append)
    assert await eng.image(image) is not None
    assert seen and seen[-1].layers_total >= 1
    if eng.kind == "docker":
        assert seen[-1].total_bytes > 0
    with pytest.raises(PullError, match="nosuch"):
        await eng.pull(registry.ref("sbtest/nosuch:9.9"))


async def test_container_lifecycle_exec_logs_stats(eng: Engine, registry: Registry) -> None:
    image = registry.ref("sbtest/hello:1.0")
    await eng.pull(image)
    port = free_port()
    name = f"rt-{uuid.uuid4().hex[:8]}"
    req = CreateRequest(
        name=name, image=image, labels=labels(eng.device_id), env={"PORT": str(port)},
        network_mode="host", restart="no",
    )  # fmt: skip
    cid = await eng.create(req)
    obs = await eng.inspect(cid)
    assert obs is not None and obs.state == "created" and obs.service == "web"
    assert obs.spec_hash == "0123456789abcdef" and obs.device == eng.device_id
    await eng.start(name)
    await asyncio.to_thread(wait_for_port, port)
    obs = await eng.inspect(cid)
    assert obs is not None and obs.state == "running" and obs.started_at
    assert [c.id for c in await eng.list_containers()] == [cid]

    res = await eng.exec(cid, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert res.exit_code == 3 and "out" in res.output and "err" in res.output
    hc = await eng.image_healthcheck(cid)
    assert hc is not None and hc.retries == 2 and "wget" in " ".join(hc.command)
    lines = [line async for line in eng.logs(cid, tail=10)]
    assert any("listening" in line for line in lines)
    stats = await eng.stats(cid)
    assert stats.memory_bytes > 0

    await eng.stop(cid, timeout=1)
    obs = await eng.inspect(cid)
    assert obs is not None and obs.state == "exited"
    await eng.remove(cid)
    await eng.remove(cid)  # already gone: not an error
    assert await eng.list_containers() == []


async def test_other_devices_and_unlabelled_containers_are_invisible(
    engine: EngineHandle, eng: Engine, registry: Registry
) -> None:
    image = registry.ref("sbtest/hello:1.0")
    await eng.pull(image)
    other = connect("someone-else-" + uuid.uuid4().hex[:6], engine.url)
    try:
        theirs = await other.create(
            CreateRequest(name=f"rt-o-{uuid.uuid4().hex[:6]}", image=image,
                          labels=labels(other.device_id), network_mode="host")
        )  # fmt: skip
        assert await eng.list_containers() == []
        assert await eng.inspect(theirs) is None
        await eng.remove(theirs)  # not ours: silently left alone
        await eng.stop(theirs)
        assert await other.inspect(theirs) is not None
        with pytest.raises(EngineError):
            await eng.start(theirs)
        with pytest.raises(EngineError, match="label"):
            await eng.create(
                CreateRequest(name="rt-bad", image=image, labels=labels(other.device_id))
            )
    finally:
        await other.close()


async def test_event_stream_sees_only_our_containers(eng: Engine, registry: Registry) -> None:
    image = registry.ref("sbtest/hello:1.0")
    await eng.pull(image)
    got: list[EngineEvent] = []

    async def watch() -> None:
        async for ev in eng.events():
            got.append(ev)
            if ev.action == "start":
                return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.5)  # let the subscription reach the engine
    cid = await eng.create(
        CreateRequest(name=f"rt-e-{uuid.uuid4().hex[:6]}", image=image,
                      labels=labels(eng.device_id), env={"PORT": str(free_port())},
                      network_mode="host")
    )  # fmt: skip
    await eng.start(cid)
    await asyncio.wait_for(task, 30)
    assert got and got[-1].service == "web" and got[-1].container_id == cid
    await eng.remove(cid)


async def test_podman_pulls_insecure_registries_through_libpod(
    podman_engine: EngineHandle, registry: Registry
) -> None:
    eng = connect("rt-insecure", podman_engine.url, insecure_registries=[registry.host])
    try:
        image = registry.ref("sbtest/crash:1.0")
        await eng.remove_image(image)
        seen: list[PullProgress] = []
        await eng.pull(image, progress=seen.append)
        assert await eng.image(image) is not None
        assert seen and seen[-1].layers_total >= 1
        with pytest.raises(PullError):
            await eng.pull(registry.ref("sbtest/nosuch:1"))
    finally:
        await eng.close()

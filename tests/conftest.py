"""Fixtures that start real services on free loopback ports and stop them by PID.

- ``nats_hub``: hub nats-server (JetStream domain ``hub``, leafnode listener, no_advertise).
- ``nats_leaf``: factory ``nats_leaf(device_id)`` -> leaf nats-server linked through a
  cuttable ``TcpProxy`` (``leaf.cut()`` / ``leaf.restore()``).
- ``registry``: Debian's docker-registry with the sbtest images pushed (session).
- ``podman_engine`` / ``docker_engine``: private engines on their own sockets (session
  processes; containers the test created are removed after each test, by label).
- ``engine``: parametrised over every engine present (``SB_TEST_ENGINES=podman`` narrows it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.engines import (
    EngineHandle,
    docker_available,
    podman_available,
    start_docker,
    start_podman,
)
from tests.harness.nats import NatsHub, NatsLeaf
from tests.harness.registry import Registry

ENGINE_KINDS = ("podman", "docker")


def _wanted(kind: str) -> bool:
    wanted = os.environ.get("SB_TEST_ENGINES")
    return wanted is None or kind in wanted.split(",")


@pytest.fixture
def nats_hub(tmp_path: Path) -> Iterator[NatsHub]:
    hub = NatsHub(tmp_path / "nats-hub")
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def nats_leaf(nats_hub: NatsHub, tmp_path: Path) -> Iterator[Callable[[str], NatsLeaf]]:
    leaves: list[NatsLeaf] = []

    def make(device_id: str) -> NatsLeaf:
        leaf = NatsLeaf(nats_hub, device_id, tmp_path / f"leaf-{device_id}")
        leaves.append(leaf)
        return leaf

    try:
        yield make
    finally:
        for leaf in leaves:
            leaf.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry"))
    try:
        reg.push_test_images()
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def _podman_service(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> Iterator[EngineHandle]:
    if not podman_available():
        pytest.skip("podman/runc not installed (run deploy/dev/system-deps.sh)")
    handle = start_podman(tmp_path_factory.mktemp("podman"), registry.registries_conf)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def _docker_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineHandle]:
    if not docker_available():
        pytest.skip("dockerd not installed (run deploy/dev/system-deps.sh)")
    handle = start_docker(tmp_path_factory.mktemp("docker"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def podman_engine(_podman_service: EngineHandle) -> Iterator[EngineHandle]:
    try:
        yield _podman_service
    finally:
        _podman_service.remove_test_containers()


@pytest.fixture
def docker_engine(_docker_service: EngineHandle) -> Iterator[EngineHandle]:
    try:
        yield _docker_service
    finally:
        _docker_service.remove_test_containers()


@pytest.fixture(params=ENGINE_KINDS)
def engine(request: pytest.FixtureRequest) -> EngineHandle:
    kind: str = request.param
    if not _wanted(kind):
        pytest.skip(f"{kind} excluded by SB_TEST_ENGINES")
    handle: EngineHandle = request.getfixturevalue(f"{kind}_engine")
    return handle

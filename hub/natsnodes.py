"""The hub's nats-server nodes, as ``Hub`` runs them: the config written at start, the
children started and waited on until healthy, and the config reloads that let a newly
enrolled device log in (``reload_nats``, ``reload_device_users``).

A mixin of ``hub.app.Hub``, kept apart so the hub's start-up order reads on its own; it uses
the hub's state, declared below for mypy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from hub import natsconf, natsjwt
from hub.children import Child, find_binary
from hub.config import DataDir, HubConfig, Secrets, save_secrets
from hub.errors import Unavailable
from hub.metrics import HubMetrics
from hub.store import Store
from hub.sync import credentials
from protocol import natsauth

log = logging.getLogger(__name__)
T = TypeVar("T")
NATS_READY_TIMEOUT = 30.0
RELOAD_WAIT = 5.0


def device_users(store: Store) -> list[natsconf.NatsUser]:
    return credentials.device_users(store)


class NatsNodes:
    data: DataDir
    cfg: HubConfig
    sec: Secrets
    metrics: HubMetrics
    store: Store | None
    keys: natsjwt.HubKeys | None
    nats_children: list[Child]
    worker: int | None
    _reload_lock: asyncio.Lock
    _extra_users: list[natsconf.NatsUser]

    if TYPE_CHECKING:

        async def call(self, fn: Callable[..., T], *args: Any) -> T: ...

    def _on_restart(self, name: str) -> None:
        self.metrics.child_restarts.labels(name).inc()

    async def _write_nats_config(self) -> None:
        assert self.store is not None
        # Every enrolled device's NATS user is in the config from the first start on; a row
        # that could not be one is quarantined first, plain passwords become hashes.
        self._extra_users = await self.call(credentials.prepare, self.store)
        trust = None
        # The trust chain's keys in both modes: a password-mode hub signs JWTs for devices
        # moving to their own key (they use them once the hub runs in JWT mode).
        self.keys = await self.call(natsjwt.ensure_keys, self.data)
        if self.cfg.jwt_auth:
            # Operator mode: no users in the config at all; written at start only (the
            # account JWT's revocations change later through the system account).
            self._jwt_secrets()
            revocations = await self.call(self.store.revocations)
            trust = natsconf.operator_mode(self.data, self.keys, revocations, self.cfg.workers)
        if self.cfg.clustered and not self.sec.route_password:
            # A hub made before clusters: its nodes' route login, made once.
            self.sec = replace(self.sec, route_password=secrets.token_urlsafe(24))
            save_secrets(self.data, self.sec)
        natsconf.write(self.cfg, self.data, self.sec, self._extra_users, trust=trust)

    async def _start_nats_child(self) -> None:
        """The nats-server, or this hub's nodes of a cluster (docs/hub.md "NATS cluster")."""
        binary = find_binary("nats-server", self.cfg.nats_server)
        nodes = natsconf.local_nodes(self.cfg)
        for node in nodes:
            name = "nats-server" if not node.clustered else f"nats-server-{node.index}"
            child = Child(
                name,
                [binary, "-c", str(natsconf.conf_path(self.cfg, self.data, node))],
                self.data.logs / f"{name}.log",
                self._on_restart,
            )
            self.nats_children.append(child)
            await child.start()
        for node, child in zip(nodes, self.nats_children, strict=True):
            await self._wait_nats_healthy(node, child)

    def _jwt_secrets(self) -> None:
        """A hub switched from password to JWT mode: its shared logins become bearer JWTs
        (nats-server in operator mode has no password users); operators and the deploy get
        the new URLs from ``signalbeam-hub init``'s output or secrets.json."""
        assert self.keys is not None
        if natsauth.is_jwt(self.sec.hub_password):
            return
        self.sec = Secrets(
            **natsjwt.shared_logins(self.keys), route_password=self.sec.route_password
        )
        save_secrets(self.data, self.sec)
        log.warning(
            "nats_auth is jwt: the hub, operator and enroll logins are now JWTs (secrets.json);"
            " give operators and the deploy the new operator and enroll URLs"
        )

    async def _wait_nats_healthy(self, node: natsconf.Node, child: Child) -> None:
        """The node's JetStream is up; on a cluster, it also knows the meta leader (streams
        and KV buckets cannot be made before the cluster elected one)."""
        base = f"http://{self.cfg.monitor_host}:{node.monitor_port}"
        deadline = time.monotonic() + NATS_READY_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if child.gave_up:
                    break
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    async with http.get(f"{base}/healthz?js-enabled-only=true") as resp:
                        healthy = resp.status == 200
                    if healthy and not node.clustered:
                        return
                    if healthy:
                        async with http.get(f"{base}/jsz") as resp:
                            doc = await resp.json()
                        if (doc.get("meta_cluster") or {}).get("leader"):
                            return
                await asyncio.sleep(0.1)
        raise Unavailable(
            f"{child.name} did not become healthy in {NATS_READY_TIMEOUT:.0f}s; "
            f"see {child.log_path}"
        )

    async def reload_nats(self, extra_users: Sequence[natsconf.NatsUser]) -> None:
        """Rewrite the nats-server config with these extra users and reload it in place;
        returns once the server has loaded it (its /varz ``config_load_time`` moved, at most
        ``RELOAD_WAIT`` seconds), so a device told "enrolled" can log in at once. Existing
        connections stay up."""
        async with self._reload_lock:
            self._extra_users = list(extra_users)
            natsconf.write(self.cfg, self.data, self.sec, self._extra_users)
            # Every local node (password mode runs a cluster only with every node local).
            for node, pid in zip(natsconf.local_nodes(self.cfg), self._nats_pids(), strict=False):
                if pid is None:
                    continue
                before = await self._config_load_time(node)
                natsconf.reload(pid)
                deadline = time.monotonic() + RELOAD_WAIT
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                    now = await self._config_load_time(node)
                    if now is not None and now != before:
                        break
                else:
                    log.warning(
                        "nats-server %d did not confirm the config reload in %.0fs",
                        node.index,
                        RELOAD_WAIT,
                    )

    def _nats_pids(self) -> list[int | None]:
        """The local nodes' nats-server pids, in ``natsconf.local_nodes`` order."""
        if self.nats_children:
            return [child.pid for child in self.nats_children]
        if self.worker is None:
            return []
        # A worker's nats-servers are `signalbeam-hub nats`'s children, which wrote their
        # pids, one a line.
        try:
            return [int(line) for line in self.data.nats_pid_file.read_text().split()]
        except (OSError, ValueError):
            log.warning("no nats-server pid in %s; config not reloaded", self.data.nats_pid_file)
            return []

    async def reload_device_users(self) -> None:
        """Regenerate the device users from the store (enrollment, decommission) and reload;
        nothing in JWT mode (there are no device users in the config)."""
        assert self.store is not None
        if self.cfg.jwt_auth:
            return
        await self.reload_nats(await self.call(device_users, self.store))

    async def _config_load_time(self, node: natsconf.Node) -> str | None:
        url = f"http://{self.cfg.monitor_host}:{node.monitor_port}/varz"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
                http.get(url) as resp,
            ):
                doc = await resp.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None
        value = doc.get("config_load_time") if isinstance(doc, dict) else None
        return None if value is None else str(value)

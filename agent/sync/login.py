"""The device's login: JWT renewal, the move from password to its own nkey, and switching the
leaf's login (JWT <-> password) when the hub refuses one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from agent.sync.enroll import save_credentials
from agent.sync.jwtauth import JwtRenewer, migrate, write_creds
from agent.sync.leaf import LeafServer, LeafSettings
from agent.sync.service_base import ServiceBase
from protocol.enroll import EnrollReply

# One logger name for all of the service's records, as before it was split into modules.
log = logging.getLogger("agent.sync.service")


class LoginPart(ServiceBase):
    """JWT renewal and migration, and the leaf's login (see the module's docstring)."""

    @property
    def _creds_file(self) -> Path:
        return self.settings.workdir / "device.creds"

    def _save_renewed(self, creds: EnrollReply) -> None:
        """A renewed JWT: the leaf's creds file (read at its next link) and the credentials
        file (read at the next start), both 0600. Direct mode has no creds file: nats-py
        reads the JWT from the renewer at each connect."""
        if self.settings.mode == "leaf":
            write_creds(self._creds_file, creds)
        if self.settings.credentials_path is not None:
            save_credentials(self.settings.credentials_path, creds)
        self._creds = creds

    async def _migrate(self) -> None:
        """A password-enrolled device moves to its own nkey on its first link to a hub that
        signs JWTs (docs/security.md "Moving a fleet to JWT mode"): it makes the key, gets
        its first JWT over its own link, saves both beside its password, and keeps the JWT
        renewed; it logs in with the JWT once the hub no longer takes the password."""
        delay = 30.0
        while self.renewer is None:
            if await self.link.wait_online(60) and self.nc is not None and self._creds:
                try:
                    creds = await migrate(self.nc, self._creds)
                except Exception as exc:
                    log.info("no nkey migration yet: %s", exc, extra=self._extra)
                else:
                    await asyncio.to_thread(self._save_renewed, creds)
                    log.info("moved to its own nkey (JWT held)", extra=self._extra)
                    self._start_renewer(creds)
                    assert self.renewer is not None
                    loop = asyncio.get_running_loop()
                    self._tasks.append(loop.create_task(self.renewer.run(), name="sync-jwt-renew"))
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3600.0)

    async def _switch_leaf_login(self) -> None:
        """Restart the leaf with the other credential, on the same port (the agent's own
        connection reconnects to it)."""
        assert self.leaf is not None
        port = self.leaf.port
        self._leaf_jwt = not self._leaf_jwt
        self._leaf_switched = time.monotonic()
        log.warning(
            "the hub refused the leaf's %s; linking with the %s",
            "JWT" if not self._leaf_jwt else "password",
            "JWT" if self._leaf_jwt else "password",
            extra=self._extra,
        )
        await self.leaf.stop()
        self.leaf = LeafServer(self._leaf_settings(self._leaf_jwt, port))
        await self.leaf.start()

    def _leaf_settings(self, use_jwt: bool, port: int) -> LeafSettings:
        s = self.settings
        creds = self._creds
        assert creds is not None
        return LeafSettings(
            device_id=self.device_id,
            workdir=s.workdir,
            hub_leaf_url=s.leaf_url or creds.leaf_url,
            # A configured leaf_url is the one link (a proxy, a fixed address); else every
            # node of the hub's cluster, so the link fails over.
            more_leaf_urls=() if s.leaf_url else tuple(creds.all_leaf_urls()[1:]),
            ca_file=s.leaf_ca_file,
            user=creds.nats_user,
            password=creds.nats_password,
            credentials=str(self._creds_file) if use_jwt else None,
            listen_port=port,
            ping_interval=self.pacing.leaf_ping,
        )

    def _start_renewer(self, creds: EnrollReply) -> None:
        self.renewer = JwtRenewer(
            creds, self._save_renewed, lambda: self.nc, ca_file=self.settings.leaf_ca_file
        )

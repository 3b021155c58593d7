"""Variables and secrets per fleet, group or device (hub.variables resolves them).

Secret values are stored only as AES-GCM ciphertext under the hub's vault key
(``hub.vault``, set on the store as ``vault`` by the hub at start); the plain value exists
only in the handler that sets it and in the sealing of a device's desired document.
"""

from __future__ import annotations

from typing import Any

from hub.desired import Membership
from hub.errors import ConfigError
from hub.store.base import StoreBase
from hub.timeutil import now_iso
from hub.variables import Resolved, Setting, resolve
from hub.vault import Vault


class VariableStore(StoreBase):
    vault: Vault | None = None

    def _vault(self) -> Vault:
        if self.vault is None:
            raise ConfigError("this hub has no vault key loaded; secrets are unavailable")
        return self.vault

    def set_variable(
        self, kind: str, scope: str, target: str, name: str, value: str, by: str
    ) -> bool:
        """Set a variable or secret; returns whether its value changed."""
        with self.tx() as c:
            old = self.row(
                "SELECT value, fingerprint FROM variables"
                " WHERE kind = ? AND scope = ? AND target = ? AND name = ?",
                (kind, scope, target, name),
            )
            row: tuple[str | None, bytes | None, str | None]
            if kind == "secret":
                vault = self._vault()
                fp = vault.fingerprint(name, value)
                if old is not None and old["fingerprint"] == fp:
                    return False
                row = (None, vault.encrypt(scope, target, name, value), fp)
            else:
                if old is not None and old["value"] == value:
                    return False
                row = (value, None, None)
            c.execute(
                "INSERT OR REPLACE INTO variables (kind, scope, target, name, value, ciphertext,"
                " fingerprint, set_by, set_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, scope, target, name, *row, by, now_iso()),
            )
            return True

    def unset_variable(self, kind: str, scope: str, target: str, name: str) -> bool:
        with self.tx() as c:
            cur = c.execute(
                "DELETE FROM variables WHERE kind = ? AND scope = ? AND target = ? AND name = ?",
                (kind, scope, target, name),
            )
            return cur.rowcount > 0

    def drop_variables(self, scope: str, target: str) -> int:
        """Remove every variable and secret of a group or device that is going away."""
        with self.tx() as c:
            return c.execute(
                "DELETE FROM variables WHERE scope = ? AND target = ?", (scope, target)
            ).rowcount

    def list_variables(
        self, kind: str, scope: str | None = None, target: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows without any secret value (a secret shows its fingerprint only)."""
        sql = (
            "SELECT scope, target, name, value, fingerprint, set_by, set_at FROM variables"
            " WHERE kind = ?"
        )
        params: list[Any] = [kind]
        if scope is not None:
            sql += " AND scope = ?"
            params.append(scope)
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        out = []
        for r in self.rows(sql + " ORDER BY scope, target, name", params):
            if kind == "secret":
                r.pop("value")
            else:
                r.pop("fingerprint")
            out.append(r)
        return out

    def variable_settings(self) -> list[Setting]:
        """Every setting (a secret's value: its fingerprint), for ``hub.variables.resolve``."""
        return self._settings()

    def _settings(self) -> list[Setting]:
        return [
            Setting(r["kind"], r["scope"], r["target"], r["name"],
                    r["value"] if r["kind"] == "var" else r["fingerprint"], r["set_at"])
            for r in self.rows(
                "SELECT kind, scope, target, name, value, fingerprint, set_at FROM variables"
            )
        ]  # fmt: skip

    def variables_of(
        self, members: list[Membership]
    ) -> dict[str, tuple[dict[str, Resolved], dict[str, Resolved]]]:
        """Each device's (variables, secrets) by ``hub.variables.resolve``; a secret's
        ``value`` there is its fingerprint."""
        settings = self._settings()
        if not settings:
            return {m.device_id: ({}, {}) for m in members}
        return {
            m.device_id: (resolve(m, settings, "var"), resolve(m, settings, "secret"))
            for m in members
        }

    def secret_value(self, r: Resolved) -> str:
        """The plain value of a resolved secret (only to seal it to a device)."""
        s = r.setting
        blob = self.scalar(
            "SELECT ciphertext FROM variables"
            " WHERE kind = 'secret' AND scope = ? AND target = ? AND name = ?",
            (s.scope, s.target, s.name),
        )
        if blob is None:
            raise ConfigError(f"secret {s.name} ({s.source}) vanished")
        return self._vault().decrypt(s.scope, s.target, s.name, bytes(blob))

    def set_seal_key(self, device_id: str, key: str | None) -> None:
        with self.tx() as c:
            c.execute("UPDATE devices SET seal_key = ? WHERE id = ?", (key, device_id))

    def seal_keys(self, device_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(device_ids), 500):
            chunk = device_ids[i : i + 500]
            for d, k in self.conn.execute(
                f"SELECT id, seal_key FROM devices WHERE seal_key IS NOT NULL"
                f" AND id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out[d] = k
        return out

    def devices_using(self, kind: str, scope: str, target: str) -> list[str]:
        """Devices a change of a setting at this scope may affect (all, a group's, one)."""
        if scope == "device":
            return [target] if self.scalar("SELECT 1 FROM devices WHERE id = ?", (target,)) else []
        if scope == "group":
            return [
                r[0]
                for r in self.conn.execute(
                    "SELECT device_id FROM group_members WHERE group_name = ?", (target,)
                )
            ]
        return [r[0] for r in self.conn.execute("SELECT id FROM devices WHERE decommissioned = 0")]

"""What the sync side of the hub keeps: device NATS credentials, the desired documents it
published, the latest heartbeat per device, presence, and re-enrollment approval.

Every method here runs on the store's writer thread (``Hub.call``); multi-step writes join
the caller's ``tx()``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from hub.errors import NotFound
from hub.store.base import StoreBase
from hub.timeutil import now_iso


class SyncStore(StoreBase):
    # --- device NATS credentials ---------------------------------------------------------
    def set_device_credentials(self, device_id: str, user: str, password_hash: str) -> None:
        """Store a device's NATS user and the bcrypt hash of its password (never the
        password: the device made it, and nats-server checks logins against the hash)."""
        with self.tx() as c:
            c.execute(
                "INSERT INTO device_credentials"
                " (device_id, nats_user, nats_password_hash, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET"
                " nats_user = excluded.nats_user,"
                " nats_password_hash = excluded.nats_password_hash, nats_public_key = NULL,"
                " created_at = excluded.created_at",
                (device_id, user, password_hash, now_iso()),
            )

    def set_device_key(
        self, device_id: str, public_key: str, now: int, *, keep_password: bool = False
    ) -> None:
        """Store a device's public nkey (JWT auth); a key it replaces is revoked as of
        ``now`` (a re-enrolled device must not keep a second login). An enrollment drops
        the password; ``keep_password``: a password-enrolled device adding its key (it keeps
        logging in with the password while the hub is in password mode)."""
        with self.tx() as c:
            old = self.scalar(
                "SELECT nats_public_key FROM device_credentials WHERE device_id = ?", (device_id,)
            )
            if old and old != public_key:
                self.revoke_key(str(old), device_id, now)
            if keep_password:
                c.execute(
                    "UPDATE device_credentials SET nats_public_key = ? WHERE device_id = ?",
                    (public_key, device_id),
                )
                return
            c.execute(
                "INSERT INTO device_credentials"
                " (device_id, nats_user, nats_password_hash, nats_public_key, created_at)"
                " VALUES (?, ?, '', ?, ?) ON CONFLICT(device_id) DO UPDATE SET"
                " nats_user = excluded.nats_user, nats_password_hash = '',"
                " nats_public_key = excluded.nats_public_key,"
                " created_at = excluded.created_at",
                (device_id, device_id, public_key, now_iso()),
            )
            # A key enrolled again after a revocation is the device's new login: its JWTs
            # are issued after revoked_at, so the revocation entry stays harmless.

    def device_key(self, device_id: str) -> str | None:
        """The public nkey of a device that may log in (enrolled, not decommissioned)."""
        value = self.scalar(
            "SELECT c.nats_public_key FROM device_credentials c JOIN devices d"
            " ON d.id = c.device_id WHERE c.device_id = ? AND d.decommissioned = 0",
            (device_id,),
        )
        return None if value is None else str(value)

    def device_password_hash(self, device_id: str) -> str | None:
        value = self.scalar(
            "SELECT c.nats_password_hash FROM device_credentials c JOIN devices d"
            " ON d.id = c.device_id WHERE c.device_id = ? AND d.decommissioned = 0",
            (device_id,),
        )
        return str(value) if value else None

    def revoke_key(self, public_key: str, device_id: str, now: int) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO revoked_device_keys (public_key, device_id, revoked_at)"
                " VALUES (?, ?, ?) ON CONFLICT(public_key) DO UPDATE SET"
                " revoked_at = excluded.revoked_at",
                (public_key, device_id, now),
            )

    def revoke_device(self, device_id: str, now: int) -> str | None:
        """Revoke the device's key (decommission); returns it, None if it has none."""
        key = self.scalar(
            "SELECT nats_public_key FROM device_credentials WHERE device_id = ?", (device_id,)
        )
        if key:
            self.revoke_key(str(key), device_id, now)
        return None if not key else str(key)

    def revocations(self) -> dict[str, int]:
        return {
            str(r[0]): int(r[1])
            for r in self.conn.execute("SELECT public_key, revoked_at FROM revoked_device_keys")
        }

    def active_device_credentials(self) -> list[tuple[str, str, str]]:
        """``(device_id, user, password hash)`` of every device that may connect: enrolled
        and not decommissioned (decommissioning revokes the device's NATS user)."""
        return [
            (r[0], r[1], r[2])
            for r in self.conn.execute(
                "SELECT c.device_id, c.nats_user, c.nats_password_hash FROM device_credentials c"
                " JOIN devices d ON d.id = c.device_id WHERE d.decommissioned = 0"
                " AND c.nats_password_hash != '' ORDER BY c.device_id"
            )
        ]

    def hash_plain_device_passwords(
        self, is_hash: Callable[[str], bool], hasher: Callable[[str], str]
    ) -> int:
        """Replace every plain password (rows from before migration 8) by its hash (run it
        under ``secure_delete``: ``hub.sync.credentials.prepare``). Returns how many were
        hashed. The device keeps its password: nothing changes for it."""
        rows = self.conn.execute(
            "SELECT device_id, nats_password_hash FROM device_credentials"
        ).fetchall()
        plain = [(hasher(pw), dev) for dev, pw in rows if pw and not is_hash(pw)]
        if plain:
            with self.tx() as c:
                c.executemany(
                    "UPDATE device_credentials SET nats_password_hash = ? WHERE device_id = ?",
                    plain,
                )
        return len(plain)

    def quarantine_devices(self, bad: dict[str, str]) -> list[str]:
        """Move each device ``{id: reason}`` out of ``devices`` into ``quarantined_devices``
        (its row, tags and credentials' user as JSON) with a hub event, in one transaction;
        its rollout targets go, everything else hanging off the row is deleted with it.
        Returns the ids moved now."""
        moved = []
        with self.tx() as c:
            for device_id, reason in bad.items():
                row = self.row("SELECT * FROM devices WHERE id = ?", (device_id,))
                if row is None:
                    continue
                row["tags"] = [
                    r[0]
                    for r in c.execute(
                        "SELECT tag FROM device_tags WHERE device_id = ?", (device_id,)
                    )
                ]
                c.execute(
                    "INSERT OR REPLACE INTO quarantined_devices"
                    " (id, reason, row, quarantined_at) VALUES (?, ?, ?, ?)",
                    (device_id, reason, json.dumps(row), now_iso()),
                )
                c.execute("DELETE FROM rollout_targets WHERE device_id = ?", (device_id,))
                c.execute("DELETE FROM devices WHERE id = ?", (device_id,))
                # A hub event (device_id NULL): the device's own log is keyed by the bad id.
                c.execute(
                    "INSERT INTO events (device_id, ts, kind, message, data, severity)"
                    " VALUES (NULL, ?, 'device.quarantined', ?, ?, 'error')",
                    (
                        now_iso(),
                        f"device {device_id!r} quarantined: {reason}",
                        json.dumps({"device_id": device_id, "reason": reason}),
                    ),
                )
                moved.append(device_id)
        return moved

    def quarantined_devices(self) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT id, reason, quarantined_at FROM quarantined_devices ORDER BY quarantined_at"
        )

    # --- enrollment ----------------------------------------------------------------------
    def device_enroll_state(self, device_id: str) -> dict[str, Any] | None:
        return self.row(
            "SELECT id, decommissioned, reenroll_approved FROM devices WHERE id = ?", (device_id,)
        )

    def approve_reenroll(self, device_id: str) -> bool:
        """Let an enrolled device id enroll again once (a replaced or re-imaged box)."""
        with self.tx() as c:
            if not self.scalar("SELECT 1 FROM devices WHERE id = ?", (device_id,)):
                raise NotFound(f"no device {device_id!r}", field="id")
            cur = c.execute(
                "UPDATE devices SET reenroll_approved = 1 WHERE id = ? AND reenroll_approved = 0",
                (device_id,),
            )
            return cur.rowcount > 0

    def reset_device_sync(self, device_id: str) -> None:
        """A (re-)enrolled device may start a fresh outbox at seq 1. An agent that names its
        store epoch says so itself (a new store is a new epoch), so only the position of
        the no-epoch numbering (older agents) is reset; an epoch's numbering never repeats,
        and keeping it spares a re-enrolled box that kept its store a false gap."""
        with self.tx() as c:
            c.execute(
                "UPDATE devices SET reenroll_approved = 0 WHERE id = ?",
                (device_id,),
            )
            c.execute(
                "INSERT INTO device_sync (device_id, last_applied_seq) VALUES (?, 0)"
                " ON CONFLICT(device_id) DO UPDATE SET last_applied_seq ="
                " CASE WHEN epoch = '' THEN 0 ELSE last_applied_seq END",
                (device_id,),
            )
            c.execute(
                "DELETE FROM device_sync_epochs WHERE device_id = ? AND epoch = ''", (device_id,)
            )

    # --- desired documents published to KV -----------------------------------------------
    def desired_published(self, device_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        if device_ids is None:
            rows = self.rows("SELECT * FROM desired_published")
        else:
            rows = []
            for i in range(0, len(device_ids), 500):
                part = device_ids[i : i + 500]
                rows += self.rows(
                    "SELECT * FROM desired_published WHERE device_id IN"
                    f" ({','.join('?' * len(part))})",
                    part,
                )
        return {r["device_id"]: r for r in rows}

    def record_desired_published(
        self,
        device_id: str,
        generation: int,
        doc_hash: str,
        bundle_ref: str | None,
        rollout_id: str | None,
    ) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO desired_published (device_id, generation, doc_hash, bundle_ref,"
                " rollout_id, written_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(device_id) DO UPDATE SET generation = excluded.generation,"
                " doc_hash = excluded.doc_hash, bundle_ref = excluded.bundle_ref,"
                " rollout_id = excluded.rollout_id, written_at = excluded.written_at",
                (device_id, generation, doc_hash, bundle_ref, rollout_id, now_iso()),
            )

    def record_desired_published_many(
        self, rows: list[tuple[str, int, str, str | None, str | None]]
    ) -> None:
        """``record_desired_published`` for ``(device_id, generation, doc_hash, bundle_ref,
        rollout_id)`` rows, in one transaction (the desired writer puts in chunks)."""
        now = now_iso()
        with self.tx() as c:
            c.executemany(
                "INSERT INTO desired_published (device_id, generation, doc_hash, bundle_ref,"
                " rollout_id, written_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(device_id) DO UPDATE SET generation = excluded.generation,"
                " doc_hash = excluded.doc_hash, bundle_ref = excluded.bundle_ref,"
                " rollout_id = excluded.rollout_id, written_at = excluded.written_at",
                [(*r, now) for r in rows],
            )

    def max_desired_generation(self) -> int:
        """The newest KV revision the hub recorded writing (0: none)."""
        return int(self.scalar("SELECT max(generation) FROM desired_published") or 0)

    def rollout_for(self, device_id: str, bundle: str, version: str) -> str | None:
        """The newest rollout that targets this device with this bundle version, if any."""
        value = self.scalar(
            "SELECT r.id FROM rollout_targets t JOIN rollouts r ON r.id = t.rollout_id"
            " WHERE t.device_id = ? AND r.bundle = ? AND r.version = ?"
            " ORDER BY r.created_at DESC, r.id DESC LIMIT 1",
            (device_id, bundle, version),
        )
        return None if value is None else str(value)

    def bundle_spec(self, bundle: str, version: str) -> tuple[dict[str, Any], str] | None:
        row = self.row(
            "SELECT spec, content_hash FROM bundle_versions WHERE bundle = ? AND version = ?",
            (bundle, version),
        )
        return None if row is None else (json.loads(row["spec"]), str(row["content_hash"]))

    # --- heartbeats and presence ---------------------------------------------------------
    def put_heartbeats(self, beats: Sequence[tuple[Any, ...]]) -> list[tuple[str, str]]:
        """Record ``(device_id, heartbeat JSON, agent_version, sent_at, received_at,
        interval)`` for devices that exist and mark them online; returns ``(device_id,
        previous status)`` for devices that were not online before (the caller announces
        them). A JSON of None ("same" heartbeat: nothing changed) keeps the stored summary;
        ``interval`` (optional) is the device's own word on when its next heartbeat comes."""
        came_online: list[tuple[str, str]] = []
        with self.tx() as c:
            for beat in beats:
                device_id, doc, agent_version, sent_at, received_at = beat[:5]
                interval = beat[5] if len(beat) > 5 else None
                row = c.execute(
                    "SELECT status, decommissioned FROM devices WHERE id = ?", (device_id,)
                ).fetchone()
                if row is None:
                    continue
                status, decommissioned = row
                if doc is None:
                    doc = "{}"  # kept below when a summary is already stored
                c.execute(
                    "INSERT INTO device_heartbeats (device_id, doc, sent_at, received_at,"
                    " next_within) VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE"
                    " SET doc = CASE WHEN excluded.doc = '{}' THEN doc ELSE excluded.doc END,"
                    " sent_at = excluded.sent_at, received_at = excluded.received_at,"
                    " next_within = excluded.next_within",
                    (device_id, doc, sent_at, received_at, interval),
                )
                new_status = "decommissioned" if decommissioned else "online"
                c.execute(
                    "UPDATE devices SET last_seen = ?, status = ?,"
                    " agent_version = COALESCE(?, agent_version) WHERE id = ?",
                    (received_at, new_status, agent_version or None, device_id),
                )
                if new_status == "online" and status != "online":
                    came_online.append((device_id, str(status)))
        return came_online

    def get_heartbeat(self, device_id: str) -> dict[str, Any] | None:
        row = self.row(
            "SELECT doc, sent_at, received_at FROM device_heartbeats WHERE device_id = ?",
            (device_id,),
        )
        if row is None:
            return None
        return {
            "state": json.loads(row["doc"]),
            "sent_at": row["sent_at"],
            "as_of": row["received_at"],
        }

    def mark_stale_offline(
        self, cutoff: str, *, now: float | None = None
    ) -> list[tuple[str, str | None]]:
        """Devices online whose last heartbeat is older than ``cutoff`` become offline,
        unless their last heartbeat said the next comes later (a quiet or metered device:
        then three of its intervals); returns ``(device_id, last_seen)`` of each."""
        with self.tx() as c:
            found = c.execute(
                "SELECT d.id, d.last_seen, h.next_within FROM devices d"
                " LEFT JOIN device_heartbeats h ON h.device_id = d.id"
                " WHERE d.status = 'online' AND (d.last_seen IS NULL OR d.last_seen < ?)",
                (cutoff,),
            ).fetchall()
            at = time.time() if now is None else now
            stale = [
                (r[0], r[1])
                for r in found
                if r[1] is None or not r[2] or r[1] < now_iso(at - 3 * float(r[2]))
            ]
            c.executemany(
                "UPDATE devices SET status = 'offline' WHERE id = ? AND status = 'online'",
                [(d,) for d, _ in stale],
            )
        return stale

    def device_last_seen(self, device_id: str) -> tuple[str, str | None] | None:
        """``(status, last_seen)`` or None for an unknown device."""
        row = self.conn.execute(
            "SELECT status, last_seen FROM devices WHERE id = ?", (device_id,)
        ).fetchone()
        return None if row is None else (str(row[0]), row[1])

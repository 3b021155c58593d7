"""The device users the hub's nats-server config is made from, and keeping them loadable.

At start (``prepare``, on the store's thread, before nats-server starts):

- a device whose id is not a valid device id (so not a valid NATS subject token; only a row
  from before ids were checked with a full match can be one, e.g. ``"cr-b\\n"``) is
  quarantined: moved to ``quarantined_devices`` with a hub event, logged at ERROR. Left in
  place it would make every nats-server config load fail, and the hub never become healthy;
- a device password still stored in plain text (enrolled before migration 8) is replaced by
  its bcrypt hash; the device keeps logging in with the password it has.

``device_users`` is what every config reload renders: it skips (and logs) anything that would
not render, so one bad row can never take the config down.
"""

from __future__ import annotations

import logging

from hub import natsconf
from hub.store import Store
from protocol.subjects import valid_device_id

log = logging.getLogger(__name__)


def invalid_devices(store: Store) -> dict[str, str]:
    """``{id: reason}`` for every device row whose id is not a valid device id."""
    bad = {}
    for (device_id,) in store.conn.execute("SELECT id FROM devices"):
        if not valid_device_id(device_id):
            bad[device_id] = (
                "its id is not a valid device id (1-63 of a-z 0-9 -), so it cannot be a NATS"
                " user or subject; enroll the machine again under a valid id"
            )
    return bad


def prepare(store: Store) -> list[natsconf.NatsUser]:
    """Quarantine unusable devices, hash plain passwords, return the device users.

    Under ``secure_delete`` (SQLite zeroes the content it frees or overwrites) and followed
    by a checkpoint, so the plain passwords leave the DB file at once, not at some later
    page reuse or checkpoint."""
    store.conn.execute("PRAGMA secure_delete = ON")
    try:
        moved = store.quarantine_devices(invalid_devices(store))
        hashed = store.hash_plain_device_passwords(natsconf.is_hash, natsconf.hash_password)
    finally:
        store.conn.execute("PRAGMA secure_delete = OFF")
    if moved or hashed:
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for device_id in moved:
        log.error(
            "device %r quarantined: its id is not a valid device id (it stays out of the NATS"
            " config; see the table quarantined_devices and the device.quarantined event)",
            device_id,
        )
    if hashed:
        log.info("stored %d device NATS passwords as bcrypt hashes (plain before)", hashed)
    return device_users(store)


def device_users(store: Store) -> list[natsconf.NatsUser]:
    users = []
    for device_id, user, password_hash in store.active_device_credentials():
        try:
            nats_user = natsconf.device_user(user, password_hash)
            nats_user.check()
        except natsconf.BadUser as exc:
            log.error("device %r left out of the NATS config: %s", device_id, exc)
            continue
        if not natsconf.is_hash(password_hash):
            # Only between migration 8 and the start that runs ``prepare``: rendered hashed.
            log.warning("device %r has a plain stored password", device_id)
        users.append(nats_user)
    return users


def quarantined(store: Store) -> list[str]:
    return [r["id"] for r in store.quarantined_devices()]

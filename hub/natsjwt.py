"""The hub's NATS trust chain in operator mode (``nats_auth = "jwt"``, docs/security.md).

Keys (``<data>/nats/keys.json``, 0600, made by ``signalbeam-hub init``, in the backup):

- the **operator** key signs the account JWTs; nats-server trusts the operator JWT only;
- the **system account** (nats-server's ``$SYS``) and a bearer user of it, which the hub uses
  to push updated account JWTs (``$SYS.REQ.CLAIMS.UPDATE``) and to kick a revoked device;
- the **SIGNALBEAM account** (JetStream on), whose identity key signs the three shared
  logins (hub, operator, enroll: bearer JWTs with today's permissions);
- the account's **device signing key**, *scoped*: the account JWT binds it to the role
  ``device`` and a permission template written with ``{{name()}}``, so nats-server gives a
  user it signed exactly one device's permissions, whatever the user JWT says (the JWT must
  carry none). A leaked device signing key can mint device logins, never an operator.

A device's user JWT: subject = the device's own public nkey, name = its id, an expiry
(``DEVICE_JWT_TTL``); the device renews it over its own link (hub/sync/deviceauth.py).
Revocation: the account JWT's ``revocations`` names the public key of every decommissioned
device (and every key a re-enrollment replaced); the hub pushes it through the system
account, no config rewrite, no reload.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hub.config import DataDir, write_private
from protocol import natsauth
from protocol.subjects import (
    API_ALL,
    ENROLL,
    FLEET_CHANGES_ALL,
    HEARTBEAT_WILDCARD,
    INBOX_ENROLL,
    INBOX_HUB,
    INBOX_OPERATOR,
    RENEW_ALL,
    SERVICE_DISCOVERY_ALL,
    desired_direct_get,
    desired_key,
    desired_prompt,
    device_all,
    device_inbox,
    heartbeat_partition_transform,
    inbox_all,
    rpc_all,
)
from sbutil.private import private_dir

ACCOUNT = "SIGNALBEAM"
SYSTEM_ACCOUNT = "SYS"
DEVICE_ROLE = "device"
DEVICE_JWT_TTL = 24 * 3600  # seconds; renewed at two thirds of its life
# The device permission template's placeholder: nats-server puts the user JWT's name (the
# device id) in its place.
NAME = "{{name()}}"
NO_LIMIT = -1


@dataclass(frozen=True)
class HubKeys:
    operator: str  # seeds
    system_account: str
    account: str
    device_signer: str

    @classmethod
    def generate(cls) -> HubKeys:
        return cls(
            operator=natsauth.new_seed("operator"),
            system_account=natsauth.new_seed("account"),
            account=natsauth.new_seed("account"),
            device_signer=natsauth.new_seed("account"),
        )

    @property
    def account_public(self) -> str:
        return natsauth.public_key(self.account)

    @property
    def system_public(self) -> str:
        return natsauth.public_key(self.system_account)

    @property
    def device_signer_public(self) -> str:
        return natsauth.public_key(self.device_signer)


def keys_path(data: DataDir) -> Path:
    return data.nats_dir / "keys.json"


def save_keys(data: DataDir, keys: HubKeys) -> None:
    private_dir(data.nats_dir)
    write_private(keys_path(data), json.dumps(asdict(keys), indent=2) + "\n")


def load_keys(data: DataDir) -> HubKeys | None:
    path = keys_path(data)
    if not path.exists():
        return None
    return HubKeys(**json.loads(path.read_text(encoding="utf-8")))


def ensure_keys(data: DataDir) -> HubKeys:
    keys = load_keys(data)
    if keys is None:
        keys = HubKeys.generate()
        save_keys(data, keys)
    return keys


def _user_limits() -> dict[str, Any]:
    return {"subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT}


def _perms(publish: tuple[str, ...] | None, subscribe: tuple[str, ...] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"pub": {}, "sub": {}}
    if publish is not None:
        out["pub"] = {"allow": list(publish)}
    if subscribe is not None:
        out["sub"] = {"allow": list(subscribe)}
    return out


def operator_jwt(keys: HubKeys) -> str:
    pub = natsauth.public_key(keys.operator)
    return natsauth.encode(
        {
            "sub": pub,
            "name": "signalbeam",
            "nats": {"type": "operator", "version": 2, "system_account": keys.system_public},
        },
        keys.operator,
        now=0,  # the operator JWT never changes: a stable config
    )


def _account_limits(**jetstream: int) -> dict[str, Any]:
    """An account's limits: none, and JetStream's only where given (the system account has
    no JetStream)."""
    return {
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "imports": NO_LIMIT,
        "exports": NO_LIMIT,
        "wildcards": True,
        "conn": NO_LIMIT,
        "leaf": NO_LIMIT,
        **jetstream,
    }


def system_account_jwt(keys: HubKeys) -> str:
    return natsauth.encode(
        {
            "sub": keys.system_public,
            "name": SYSTEM_ACCOUNT,
            "nats": {
                "type": "account",
                "version": 2,
                "limits": _account_limits(),
                "default_permissions": {"pub": {}, "sub": {}},
            },
        },
        keys.operator,
        now=0,
    )


def device_permissions(device_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) of one device (hub/natsconf.py ``device_user`` explains each);
    with ``NAME`` as the id, the scoped signing key's template."""
    return (
        (
            device_all(device_id),
            inbox_all(INBOX_HUB),
            desired_direct_get(device_id),
            desired_direct_get(device_id, domain=None),
        ),
        (
            inbox_all(device_inbox(device_id)),
            desired_prompt(device_id),
            desired_key(device_id),
            rpc_all(device_id),
        ),
    )


def heartbeat_mappings(partitions: int) -> dict[str, str]:
    """The account's subject mappings: with hub workers (``partitions`` > 1) each device's
    heartbeats go to its partition's worker (``protocol.subjects.heartbeat_partition``),
    the same ``partition()`` of the id as its reports; none for one hub. Applied by
    nats-server where the device's message enters the hub account, so devices, their
    permissions and the wire stay as they are."""
    if partitions <= 1:
        return {}
    return {HEARTBEAT_WILDCARD: heartbeat_partition_transform(partitions)}


def account_jwt(
    keys: HubKeys, revocations: dict[str, int], *, now: int | None = None, partitions: int = 1
) -> str:
    """The SIGNALBEAM account: JetStream, the scoped device signing key, the revoked
    device keys (``{public key: revoked at}``: JWTs issued up to then are refused) and, with
    hub workers, the heartbeat mapping (``heartbeat_mappings``)."""
    pub, sub = device_permissions(NAME)
    template = {**_perms(pub, sub), **_user_limits()}
    mappings = {
        src: [{"subject": dest, "weight": 100}]
        for src, dest in heartbeat_mappings(partitions).items()
    }
    return natsauth.encode(
        {
            "sub": keys.account_public,
            "name": ACCOUNT,
            "nats": {
                "type": "account",
                "version": 2,
                "limits": _account_limits(
                    mem_storage=NO_LIMIT, disk_storage=NO_LIMIT, streams=NO_LIMIT, consumer=NO_LIMIT
                ),
                "default_permissions": {"pub": {}, "sub": {}},
                "signing_keys": [
                    {
                        "kind": "user_scope",
                        "key": keys.device_signer_public,
                        "role": DEVICE_ROLE,
                        "template": template,
                    }
                ],
                "revocations": dict(sorted(revocations.items())),
                **({"mappings": mappings} if mappings else {}),
            },
        },
        keys.operator,
        now=now,
    )


def shared_user_jwt(
    keys: HubKeys,
    name: str,
    publish: tuple[str, ...] | None,
    subscribe: tuple[str, ...] | None,
    *,
    system: bool = False,
) -> str:
    """A bearer login with fixed permissions (hub, operator, enroll; ``system``: the hub's
    system-account login). Its public key is a fresh one nobody holds: a bearer JWT needs
    no signature, the JWT is the secret."""
    issuer = keys.system_account if system else keys.account
    return natsauth.encode(
        {
            "sub": natsauth.public_key(natsauth.new_seed("user")),
            "name": name,
            "nats": {
                "type": "user",
                "version": 2,
                "bearer_token": True,
                **_perms(publish, subscribe),
                **_user_limits(),
            },
        },
        issuer,
    )


def shared_logins(keys: HubKeys) -> dict[str, str]:
    """The secrets.json values of the shared logins in JWT mode (same permissions as the
    password users of hub/natsconf.py ``base_users``)."""
    return {
        "hub_password": shared_user_jwt(keys, "hub", None, None),
        "operator_password": shared_user_jwt(
            keys,
            "operator",
            (API_ALL, SERVICE_DISCOVERY_ALL),
            (inbox_all(INBOX_OPERATOR), FLEET_CHANGES_ALL),
        ),
        # The bootstrap login: enrollment, and the renewal of an expired device JWT (which
        # the device's own link can no longer carry).
        "enroll_password": shared_user_jwt(
            keys, "enroll", (ENROLL, RENEW_ALL), (inbox_all(INBOX_ENROLL),)
        ),
    }


def system_user_jwt(keys: HubKeys) -> str:
    return shared_user_jwt(keys, "hub-system", None, None, system=True)


def device_jwt(
    keys: HubKeys,
    device_id: str,
    device_key: str,
    *,
    ttl: int = DEVICE_JWT_TTL,
    now: int | None = None,
) -> str:
    """A device's user JWT, signed by the scoped device key: no permissions of its own (the
    scope's template gives them), ``name`` = the device id the template fills in."""
    issued = int(time.time()) if now is None else now
    return natsauth.encode(
        {
            "sub": device_key,
            "name": device_id,
            "exp": issued + ttl,
            "nats": {
                "type": "user",
                "version": 2,
                "issuer_account": keys.account_public,
                # Nothing else: nats-server refuses a scoped user with any permission or
                # limit set, even an empty list or "no limit".
            },
        },
        keys.device_signer,
        now=issued,
    )

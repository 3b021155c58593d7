"""Numbered schema migrations, each applied once in its own transaction and recorded.

Never edit a migration that has shipped: add a new one. ``schema_migrations`` lists what a
database has, so an old database is brought forward on open.
"""

from __future__ import annotations

import sqlite_utils

from hub.errors import ConfigError
from hub.timeutil import now_iso
from sbutil import sqlite
from sbutil.sqlite import Migration

MIGRATIONS: list[Migration] = [
    (
        1,
        "fleet store",
        """
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(id),
    hostname TEXT NOT NULL DEFAULT '',
    arch TEXT NOT NULL DEFAULT '',
    os TEXT NOT NULL DEFAULT '',
    engine TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'unknown',
    enrolled_at TEXT NOT NULL,
    last_seen TEXT,
    decommissioned INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_status ON devices(status);
CREATE TABLE device_tags (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (device_id, tag)
);
CREATE INDEX device_tags_tag ON device_tags(tag);
CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE TABLE group_members (
    group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    PRIMARY KEY (group_name, device_id)
);
CREATE INDEX group_members_device ON group_members(device_id);
CREATE TABLE bundles (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE bundle_versions (
    bundle TEXT NOT NULL REFERENCES bundles(name),
    version TEXT NOT NULL,
    spec TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    PRIMARY KEY (bundle, version)
);
-- Versions are immutable: a changed spec must be a new version.
CREATE TRIGGER bundle_versions_no_update BEFORE UPDATE ON bundle_versions
BEGIN SELECT RAISE(ABORT, 'bundle versions are immutable'); END;
CREATE TABLE assignments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target_kind TEXT NOT NULL CHECK (target_kind IN ('device', 'group', 'tag')),
    target TEXT NOT NULL,
    bundle TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (target_kind, target),
    FOREIGN KEY (bundle, version) REFERENCES bundle_versions(bundle, version)
);
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    bundle TEXT NOT NULL,
    version TEXT NOT NULL,
    target_kind TEXT NOT NULL CHECK (target_kind IN ('device', 'group', 'tag')),
    target TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'running',
    canary_percent INTEGER NOT NULL DEFAULT 0,
    max_failures INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    FOREIGN KEY (bundle, version) REFERENCES bundle_versions(bundle, version)
);
CREATE TABLE rollout_targets (
    rollout_id TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices(id),
    state TEXT NOT NULL DEFAULT 'Pending'
        CHECK (state IN ('Pending', 'Updating', 'Succeeded', 'Failed')),
    reason TEXT NOT NULL DEFAULT '',
    wave INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE TABLE reported_state (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    doc TEXT NOT NULL,
    as_of TEXT NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '{}',
    seq INTEGER
);
CREATE INDEX events_device ON events(device_id, id);
CREATE TABLE metrics_1m (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ts INTEGER NOT NULL,
    min REAL NOT NULL,
    avg REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (device_id, name, ts)
);
CREATE TABLE metrics_1h (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ts INTEGER NOT NULL,
    min REAL NOT NULL,
    avg REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (device_id, name, ts)
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'readonly')),
    key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    revoked_at TEXT
);
CREATE TABLE enrollment_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL REFERENCES tenants(id),
    expires_at TEXT NOT NULL,
    max_uses INTEGER NOT NULL CHECK (max_uses > 0),
    uses INTEGER NOT NULL DEFAULT 0,
    revoked INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE device_sync (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    last_applied_seq INTEGER NOT NULL DEFAULT 0
);
""",
    ),
    (
        2,
        "sync: device credentials, desired publication, heartbeats, re-enroll approval",
        """
-- One NATS user per enrolled device (plain text, like the rest of the generated nats-server
-- config: MVP; the design's next step is JWT auth or auth callout).
CREATE TABLE device_credentials (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    nats_user TEXT NOT NULL UNIQUE,
    nats_password TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- What the hub last wrote to the KV bucket `desired` for each device; the KV revision is the
-- generation. doc_hash covers the document without its generation, so an unchanged desired
-- state is never written again.
CREATE TABLE desired_published (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    doc_hash TEXT NOT NULL,
    bundle_ref TEXT,
    rollout_id TEXT,
    written_at TEXT NOT NULL
);
-- The latest heartbeat per device (small; overwritten every 30 s).
CREATE TABLE device_heartbeats (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    doc TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    received_at TEXT NOT NULL
);
ALTER TABLE devices ADD COLUMN reenroll_approved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN severity TEXT NOT NULL DEFAULT 'info';
CREATE INDEX devices_presence ON devices(status, last_seen);
""",
    ),
    (
        3,
        "rollouts: waves written, previous assignments, acknowledged generations",
        """
-- Why a rollout is paused/failed, and how many failures a resume accepted (only newer
-- failures count against max_failures).
ALTER TABLE rollouts ADD COLUMN reason TEXT NOT NULL DEFAULT '';
ALTER TABLE rollouts ADD COLUMN failures_accepted INTEGER NOT NULL DEFAULT 0;
-- Per device: when its wave wrote the rollout's device-level assignment (NULL: not yet),
-- that assignment's id and the device-level assignment it replaced (what abort restores),
-- the newest generation known before the write, and the generation the device acknowledged.
ALTER TABLE rollout_targets ADD COLUMN written_at TEXT;
ALTER TABLE rollout_targets ADD COLUMN assignment_id INTEGER;
ALTER TABLE rollout_targets ADD COLUMN prev_bundle TEXT;
ALTER TABLE rollout_targets ADD COLUMN prev_version TEXT;
ALTER TABLE rollout_targets ADD COLUMN base_generation INTEGER;
ALTER TABLE rollout_targets ADD COLUMN generation INTEGER;
CREATE INDEX rollout_targets_device ON rollout_targets(device_id);
CREATE INDEX rollouts_status ON rollouts(status);
""",
    ),
    (
        4,
        "ingest: metric rollups as WITHOUT ROWID tables",
        """
-- Keyed by (device, metric, minute/hour) only: without a rowid each upsert touches one
-- b-tree instead of a table plus its primary-key index (the minute rows are most of what
-- ingest writes: 5 per device per minute).
CREATE TABLE metrics_1m_new (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ts INTEGER NOT NULL,
    min REAL NOT NULL,
    avg REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (device_id, name, ts)
) WITHOUT ROWID;
INSERT INTO metrics_1m_new SELECT device_id, name, ts, min, avg, max FROM metrics_1m;
DROP TABLE metrics_1m;
ALTER TABLE metrics_1m_new RENAME TO metrics_1m;
CREATE TABLE metrics_1h_new (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ts INTEGER NOT NULL,
    min REAL NOT NULL,
    avg REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (device_id, name, ts)
) WITHOUT ROWID;
INSERT INTO metrics_1h_new SELECT device_id, name, ts, min, avg, max FROM metrics_1h;
DROP TABLE metrics_1h;
ALTER TABLE metrics_1h_new RENAME TO metrics_1h;
""",
    ),
    (
        5,
        "retention: events by time",
        """
-- The retention prune deletes events by age; without this it would scan the whole table
-- every pass. Metric rollups need none: each series' expired rows are a key range already.
CREATE INDEX events_ts ON events(ts);
""",
    ),
    (
        6,
        "rollouts: every deployment verdict of a rollout's devices",
        """
-- Each deployment row a device in an active rollout reports (hub.rollouts.service
-- .record_deployments, in the ingest transaction; its SQL in hub/store/rollouts.py): the
-- rollout judges the generation it wrote from its own verdict, not from the device's newest
-- row, which after a rollback is the rollback target's. Rows go when the device or the
-- rollout is final.
CREATE TABLE rollout_deployments (
    rollout_id TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    bundle_ref TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (rollout_id, device_id, generation)
) WITHOUT ROWID;
""",
    ),
    (
        7,
        "ingest: per-device store epochs",
        """
-- A device's outbox numbering belongs to one store (its epoch): an agent whose database was
-- deleted starts again at 1 under a new epoch, and the hub keeps one position per epoch so
-- those rows are applied, not dropped as replays. device_sync keeps the current epoch and
-- its position (what "behind" is measured against); '' is an older agent (no epoch).
ALTER TABLE device_sync ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
CREATE TABLE device_sync_epochs (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    epoch TEXT NOT NULL,
    last_applied_seq INTEGER NOT NULL DEFAULT 0,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (device_id, epoch)
) WITHOUT ROWID;
INSERT INTO device_sync_epochs (device_id, epoch, last_applied_seq, first_seen)
    SELECT device_id, '', last_applied_seq, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM device_sync;
""",
    ),
    (
        8,
        "security: device NATS passwords as bcrypt hashes; quarantined devices",
        """
-- Only the bcrypt hash of a device's NATS password is kept (the device makes the password).
-- Rows from before this migration hold the plain password until the hub's next start hashes
-- them (hub.sync.credentials), so enrolled devices keep logging in with what they have.
ALTER TABLE device_credentials RENAME COLUMN nats_password TO nats_password_hash;
-- A device whose id can never be a NATS user (enrolled before ids were checked with a full
-- match: an id ending in a newline) is moved here at start, with its row as JSON, instead
-- of producing a nats-server config that fails to load (issue 19).
CREATE TABLE quarantined_devices (
    id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    row TEXT NOT NULL,
    quarantined_at TEXT NOT NULL
);
""",
    ),
    (
        9,
        "events: one name for a changed desired bundle",
        """
-- The hub wrote `desired_changed` where the agent writes `desired.changed` for the same
-- happening; dotted kinds (container.restarted, rollout.desired) are the rule.
UPDATE events SET kind = 'desired.changed' WHERE kind = 'desired_changed';
""",
    ),
    (
        10,
        "update gates: maintenance windows per device or group; operator overrides",
        """
-- Maintenance windows (bundles.windows grammar, a JSON list) set for a device or a group;
-- delivered in the device's desired document (hub.gates resolves them).
CREATE TABLE maintenance_windows (
    target_kind TEXT NOT NULL CHECK (target_kind IN ('device', 'group')),
    target TEXT NOT NULL,
    windows TEXT NOT NULL,
    set_by TEXT NOT NULL DEFAULT '',
    set_at TEXT NOT NULL,
    PRIMARY KEY (target_kind, target)
);
-- An operator's "start it now, through locks and windows" for one device and the bundle
-- version it resolved to then: it holds for that version only.
CREATE TABLE update_overrides (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    bundle_ref TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
""",
    ),
    (
        11,
        "rollouts: phases numbered from 1, bake time, failure limit as a percentage",
        """
-- A rollout is a ladder of phases (hub/rollouts/machine.py); canary + rest is two of them.
-- One numbering everywhere: the old 0-based wave becomes the 1-based phase.
ALTER TABLE rollout_targets RENAME COLUMN wave TO phase;
UPDATE rollout_targets SET phase = phase + 1;
-- The steps as asked (e.g. '1%,10%,50%,100%'; '' for rollouts from before), the bake time
-- in seconds, and max-failures as hundredths of a percent (NULL: max_failures is a count).
ALTER TABLE rollouts ADD COLUMN phases TEXT NOT NULL DEFAULT '';
ALTER TABLE rollouts ADD COLUMN bake_s REAL NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN max_failures_basis INTEGER;
-- Per phase: its planned size, when it was written, when every device of it was final (its
-- bake starts then), and the failures in it a resume accepted.
CREATE TABLE rollout_phases (
    rollout_id TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    number INTEGER NOT NULL CHECK (number >= 1),
    size INTEGER NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    failures_accepted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, number)
) WITHOUT ROWID;
INSERT INTO rollout_phases (rollout_id, number, size, started_at)
    SELECT rollout_id, phase, count(*), min(written_at) FROM rollout_targets
    GROUP BY rollout_id, phase;
""",
    ),
    (
        12,
        "signed bundles: bundle signatures and the trust-set chain",
        """
-- Signatures made by the operator's key (the hub holds none), one per key and version; a
-- version can be signed again by a new key during a key rotation without a new version.
CREATE TABLE bundle_signatures (
    bundle TEXT NOT NULL,
    version TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (bundle, version, key_id),
    FOREIGN KEY (bundle, version) REFERENCES bundle_versions(bundle, version)
);
-- The fleet's trust sets (bundles.signing): serial n+1 is signed by a key of serial n.
CREATE TABLE trust_sets (
    serial INTEGER PRIMARY KEY,
    doc TEXT NOT NULL,
    created_at TEXT NOT NULL
);
""",
    ),
    (
        13,
        "security: device nkeys (JWT auth) and revoked device keys",
        """
-- JWT auth (issue 16): the device's own public nkey (the seed never leaves the device); the
-- hub signs user JWTs for it. NULL for a device enrolled with a password.
ALTER TABLE device_credentials ADD COLUMN nats_public_key TEXT;
-- Every device key the hub revoked (decommission, a re-enrollment with a new key): the
-- account JWT's revocations, so a JWT issued to it up to revoked_at is refused.
CREATE TABLE revoked_device_keys (
    public_key TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    revoked_at INTEGER NOT NULL
);
""",
    ),
    (
        14,
        "per-device variables and secrets; each device's sealing key",
        """
-- Variables and secrets set for the fleet (target ''), a group or a device (hub.variables
-- resolves them per device). A variable's value is plain; a secret's is AES-GCM ciphertext
-- under the hub's vault key (hub/vault.py, a file beside the DB, never in it) with its
-- fingerprint (an HMAC: names the value without revealing it).
CREATE TABLE variables (
    kind TEXT NOT NULL CHECK (kind IN ('var', 'secret')),
    scope TEXT NOT NULL CHECK (scope IN ('fleet', 'group', 'device')),
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT,
    ciphertext BLOB,
    fingerprint TEXT,
    set_by TEXT NOT NULL,
    set_at TEXT NOT NULL,
    PRIMARY KEY (kind, scope, target, name)
) WITHOUT ROWID;
-- The X25519 public key the device made at enrollment: its secrets are sealed to it.
ALTER TABLE devices ADD COLUMN seal_key TEXT;
""",
    ),
    (
        15,
        "metered links: data budgets per device or group; heartbeat interval per device",
        """
-- A device's or group's data budget in bytes per day (protocol.metered); delivered in the
-- device's desired document (hub.metered resolves it).
CREATE TABLE metered_budgets (
    target_kind TEXT NOT NULL CHECK (target_kind IN ('device', 'group')),
    target TEXT NOT NULL,
    budget INTEGER NOT NULL CHECK (budget > 0),
    set_by TEXT NOT NULL DEFAULT '',
    set_at TEXT NOT NULL,
    PRIMARY KEY (target_kind, target)
);
-- Seconds until the device's next heartbeat, as its last one said (longer while nothing
-- changes, or on a metered link): the offline grace stretches to three of them.
ALTER TABLE device_heartbeats ADD COLUMN next_within REAL;
""",
    ),
    (
        16,
        "ingest: hourly rollups folded incrementally",
        """
-- The hour's minute rows folded so far (n) and the sum of their averages (total): a new
-- minute is folded in (min of minimums, max of maximums, total/n) instead of the hour being
-- recomputed from all of its minute rows. NULL for rows written before: such an hour is
-- recomputed from its minutes at its next minute, which fills both (hub.store.telemetry).
ALTER TABLE metrics_1h ADD COLUMN n INTEGER;
ALTER TABLE metrics_1h ADD COLUMN total REAL;
""",
    ),
]


def applied_versions(db: sqlite_utils.Database) -> list[int]:
    sqlite.ensure_table(db.conn, "TEXT")
    return sqlite.applied_versions(db.conn)


def migrate(db: sqlite_utils.Database) -> list[int]:
    """Apply every migration not yet recorded (``sbutil.sqlite.migrate``); return the
    versions applied now. A database with versions this hub does not know is refused."""
    return sqlite.migrate(
        db.conn,
        MIGRATIONS,
        stamp=now_iso,
        applied_at_type="TEXT",
        refuse_newer=lambda versions: ConfigError(
            f"database has schema version(s) {versions} this hub does not know; "
            "it was written by a newer hub"
        ),
    )

"""The JetStream objects the devices rely on, created (or brought to this config) at start.

- ``SB_REPORTS`` on ``sb.dev.*.report``: file storage; ``duplicate_window`` 2 h drops a
  resend with the same ``Nats-Msg-Id``; work-queue retention, so a report leaves the stream
  once the ingest acked it (after its rows committed to SQLite) and the stream is only the
  backlog; ``discard: new`` at the byte limit, so a hub that falls far behind makes devices
  keep rows in their own outbox (a failed publish) instead of silently losing old ones.
- KV ``desired``: one key per device, ``allow_direct`` (devices read their key with a direct
  get, the only JetStream API they may call), history 5, and a headers-only republish of
  every put from ``$KV.desired.<id>`` to ``sb.desired.<id>``: the device's prompt to read
  (nats-server never lets ``$KV.>`` cross a leafnode link between JetStream domains).

With hub workers (``workers = M``, docs/architecture.md "Scale path") the stream's subject
transform files each report under ``sb.dev.<id>.report.<p>``, ``p`` = ``partition(M, 1)``
of the device id; one hub (M = 1) stores the subject as published, as before.

Both have ``replicas`` copies: R3 on a hub NATS cluster (``HubConfig.js_replicas``), so a
node's death loses no report and no desired document; a stream or bucket made before the
cluster is brought to that count in place.

Both live in domain ``hub`` (the hub's nats-server config), so leaf devices address them as
``$JS.hub.API...``.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from protocol.report import MAX_REPORT_BYTES
from protocol.subjects import (
    DESIRED_BUCKET,
    DESIRED_REPUBLISH_DEST,
    DESIRED_REPUBLISH_SRC,
    REPORT_STREAM,
    REPORT_WILDCARD,
    report_partition_transform,
)

log = logging.getLogger(__name__)

DUPLICATE_WINDOW = 2 * 3600.0
MAX_MSG_SIZE = MAX_REPORT_BYTES + 8 * 1024  # the body limit plus headers
REPORT_MAX_BYTES = 1024**3
REPORT_MAX_AGE = 30 * 86400.0
DESIRED_HISTORY = 5


def report_stream_config(partitions: int = 1, replicas: int = 1) -> StreamConfig:
    transform = (
        SubjectTransform(src=REPORT_WILDCARD, dest=report_partition_transform(partitions))
        if partitions > 1
        else None
    )
    return StreamConfig(
        name=REPORT_STREAM,
        description="device report batches; drained by the hub ingest (docs/sync.md)",
        subjects=[REPORT_WILDCARD],
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.NEW,
        storage=StorageType.FILE,
        max_bytes=REPORT_MAX_BYTES,
        max_age=REPORT_MAX_AGE,
        max_msg_size=MAX_MSG_SIZE,
        duplicate_window=DUPLICATE_WINDOW,
        num_replicas=replicas,
        subject_transform=transform,
    )


def _transform(cfg: StreamConfig) -> tuple[str, str] | None:
    t = cfg.subject_transform
    return None if t is None else (t.src, t.dest)


async def ensure_report_stream(
    js: JetStreamContext, partitions: int = 1, replicas: int = 1
) -> None:
    cfg = report_stream_config(partitions, replicas)
    try:
        info = await js.stream_info(REPORT_STREAM)
    except NotFoundError:
        await js.add_stream(cfg)
        log.info("created stream %s", REPORT_STREAM)
        return
    have = info.config
    if (
        have.subjects != cfg.subjects
        or have.duplicate_window != cfg.duplicate_window
        or have.max_msg_size != cfg.max_msg_size
        or have.max_bytes != cfg.max_bytes
        or have.max_age != cfg.max_age
        or have.discard != cfg.discard
        or _transform(have) != _transform(cfg)
        or (have.num_replicas or 1) != cfg.num_replicas
    ):
        if have.retention != cfg.retention:
            # Retention cannot change in place; keep the stream (it still works) and say so.
            log.warning(
                "stream %s has retention %s, not %s; leaving it as it is",
                REPORT_STREAM,
                have.retention,
                cfg.retention,
            )
            return
        try:
            await js.update_stream(cfg)
            log.info("updated stream %s to the hub's config", REPORT_STREAM)
        except BadRequestError as exc:
            log.warning("could not update stream %s: %s", REPORT_STREAM, exc)


async def ensure_desired_bucket(js: JetStreamContext, replicas: int = 1) -> tuple[KeyValue, bool]:
    """The bucket, and True when it was created now (a fresh or wiped JetStream store: every
    device's document must be written again, whatever the DB says was written)."""
    try:
        kv = await js.key_value(DESIRED_BUCKET)
        info = await js.stream_info(f"KV_{DESIRED_BUCKET}")
        rp = info.config.republish
        if (
            not info.config.allow_direct
            or (info.config.num_replicas or 1) != replicas
            or rp is None
            or (rp.src, rp.dest, bool(rp.headers_only))
            != (_republish().src, _republish().dest, True)
        ):
            # Devices read only with a direct get and learn of puts only from the republish;
            # bring an older bucket to this config in place.
            info.config.allow_direct = True
            info.config.republish = _republish()
            info.config.num_replicas = replicas
            await js.update_stream(info.config)
            log.info("updated KV bucket %s (direct get, republish, R%d)", DESIRED_BUCKET, replicas)
        return kv, False
    except BucketNotFoundError:
        kv = await js.create_key_value(
            KeyValueConfig(
                bucket=DESIRED_BUCKET,
                history=DESIRED_HISTORY,
                storage=StorageType.FILE,
                direct=True,
                republish=_republish(),
                replicas=replicas,
                description="desired state per device (docs/sync.md)",
            )
        )
        log.info("created KV bucket %s", DESIRED_BUCKET)
        return kv, True


def _republish() -> RePublish:
    return RePublish(src=DESIRED_REPUBLISH_SRC, dest=DESIRED_REPUBLISH_DEST, headers_only=True)

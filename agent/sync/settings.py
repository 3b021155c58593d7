"""``SyncSettings``: what the sync service runs with, and how it comes from the agent config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.sync.downlink import DownlinkSettings
from agent.sync.enroll import load_credentials
from agent.sync.gate import credentials_path
from agent.sync.heartbeat import HEARTBEAT_ACK_TIMEOUT
from agent.sync.intake import TRUST_FILE
from agent.sync.status import STATUS_FILE
from agent.sync.uplink import UplinkSettings
from protocol.enroll import EnrollReply
from protocol.subjects import JS_DOMAIN

Mode = Literal["leaf", "direct"]


@dataclass(frozen=True)
class SyncSettings:
    mode: Mode
    url: str | None = None  # direct mode: where to connect
    credentials: EnrollReply | None = None
    workdir: Path = Path(".")
    leaf_port: int = 0
    heartbeat_interval: float = 30.0
    heartbeat_ack_timeout: float = HEARTBEAT_ACK_TIMEOUT  # capped at half an interval
    uplink: UplinkSettings = field(default_factory=UplinkSettings)
    downlink: DownlinkSettings = field(default_factory=DownlinkSettings)
    connect_retry: float = 2.0
    leaf_check: float = 0.5  # seconds between link checks (local /leafz, PubAcks, staleness)
    # Where the running agent leaves its sync view for other processes (`status` CLI).
    status_path: Path | None = None
    status_every: float = 10.0
    # The [hub] ca_file pinning the hub's certificate (for the leaf link, or for the agent's
    # own connection in direct mode), and a leaf URL that overrides the enrolled one
    # (agent/config.py HubConfig).
    leaf_ca_file: str | None = None
    leaf_url: str | None = None
    # Signed bundles (agent.sync.intake): where the device's trust set is kept, and the
    # config's [signing] keys and require. trust_path None: no check (tests of sync alone).
    trust_path: Path | None = None
    pinned_keys: tuple[str, ...] = ()
    require_signed: bool | None = None
    # JWT mode: where the credentials file lives (the renewed JWT is saved there).
    credentials_path: Path | None = None
    # The config's [metered] budget (bytes per day); the hub's, when it sets one, wins.
    metered_budget: int | None = None

    @property
    def js_domain(self) -> str:
        return self.credentials.js_domain if self.credentials else JS_DOMAIN


def settings_from_config(config: Any) -> SyncSettings | None:
    """``SyncSettings`` for an ``AgentConfig``; None when sync is off (not enrolled)."""
    path = credentials_path(config)
    creds = load_credentials(path) if path.exists() else None
    url = getattr(config.hub, "url", None)
    workdir = Path(config.data_dir) / "leaf"
    status_path = Path(config.data_dir) / STATUS_FILE
    beat = float(getattr(config.hub, "heartbeat_interval", 30.0))
    signing = getattr(config, "signing", None)
    trust: dict[str, Any] = {
        "trust_path": Path(config.data_dir) / TRUST_FILE,
        "pinned_keys": tuple(getattr(signing, "trusted_keys", ())),
        "require_signed": getattr(signing, "require", None),
        "metered_budget": getattr(getattr(config, "metered", None), "budget", None),
    }
    if not url and creds is None:
        return None
    # Direct mode (a [hub] url) connects itself; leaf mode links its leaf to the enrolled
    # (or configured) leaf URL.
    return SyncSettings(
        "direct" if url else "leaf",
        credentials_path=path,
        url=url or None,
        credentials=creds,
        workdir=workdir,
        heartbeat_interval=beat,
        status_path=status_path,
        leaf_ca_file=getattr(config.hub, "ca_file", None),
        leaf_url=None if url else getattr(config.hub, "leaf_url", None),
        **trust,
    )

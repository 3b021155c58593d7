"""Container engines (Docker, Podman) behind one async interface scoped to one device."""

from agent.runtime.base import (
    LABEL_BUNDLE,
    LABEL_DEVICE,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    CreateRequest,
    Engine,
    EngineEvent,
    EngineInfo,
    ObservedContainer,
    PullProgress,
    RegistryAuth,
)
from agent.runtime.detect import candidate_urls, connect

__all__ = [
    "LABEL_BUNDLE",
    "LABEL_DEVICE",
    "LABEL_SERVICE",
    "LABEL_SPEC_HASH",
    "LABEL_VERSION",
    "CreateRequest",
    "Engine",
    "EngineEvent",
    "EngineInfo",
    "ObservedContainer",
    "PullProgress",
    "RegistryAuth",
    "candidate_urls",
    "connect",
]

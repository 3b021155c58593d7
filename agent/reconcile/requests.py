"""The engine's create request for one container of a bundle: its spec, and this device's
labels (what the planner reads back to know whose container it is and which spec it runs)."""

from __future__ import annotations

from agent.runtime.base import (
    LABEL_BUNDLE,
    LABEL_DEVICE,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    CreateRequest,
    ImageHealthcheck,
    MountSpec,
    PortSpec,
)
from bundles.model import ContainerSpec


def create_request(
    spec: ContainerSpec, *, device_id: str, bundle: str, version: str, spec_hash: str, name: str
) -> CreateRequest:
    labels = dict(spec.labels)
    labels.update(
        {
            LABEL_DEVICE: device_id,
            LABEL_BUNDLE: bundle,
            LABEL_VERSION: version,
            LABEL_SERVICE: spec.name,
            LABEL_SPEC_HASH: spec_hash,
        }
    )
    return CreateRequest(
        name=name,
        image=spec.image,
        labels=labels,
        command=spec.command,
        args=spec.args,
        env=dict(spec.env),
        ports=tuple(PortSpec(p.container, p.host, p.protocol, p.host_ip) for p in spec.ports),
        mounts=tuple(MountSpec(v.source, v.target, v.type, v.read_only) for v in spec.volumes),
        restart=spec.restart,
        network_mode=spec.network_mode,
        memory=spec.resources.memory,
        cpus=spec.resources.cpus,
        exec_probe=exec_probe(spec),
    )


def exec_probe(spec: ContainerSpec) -> ImageHealthcheck | None:
    """The bundle's exec probe, handed to the engine so it can run it without an exec
    session that outlives it (see ``CreateRequest.exec_probe``)."""
    hc = spec.healthcheck
    if hc is None or hc.type != "exec" or not hc.command:
        return None
    return ImageHealthcheck(
        tuple(hc.command), hc.interval, hc.timeout, max(1, hc.retries), hc.start_period
    )

"""What the demo runs: busybox stand-ins for the warehouse-monitor images and the bundle
that deploys them (``deploy/dev/demo.py``; the stack that runs them is ``demo_stack``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.harness.registry import Registry

# Busybox stand-ins for the real images: each serves a status page with busybox httpd on the
# first free port of its range on 127.0.0.1 (host networking; the three demo devices share
# this machine, so each container finds its own port) and logs a reading every few seconds.
_STATUS = (
    "mkdir -p /tmp/www; port=; "
    "for p in $PORTS; do if httpd -p 127.0.0.1:$p -h /tmp/www 2>/dev/null; "
    "then port=$p; break; fi; done; "
    'echo "$NAME $VERSION: status page http://127.0.0.1:${port:-none}/"; '
)
_SENSOR = _STATUS + (
    "i=0; while :; do i=$((i+1)); "
    'line="reading $i temperature=21.$((i % 10))C sensor=$VERSION"; echo "$line"; '
    'printf "%s\\n" "$NAME $VERSION on port ${port:-none}" "$line" > /tmp/www/index.html; '
    "touch /tmp/healthy; sleep 2; done"
)
_RELAY = _STATUS + (
    "i=0; while :; do i=$((i+1)); "
    'line="relay-controller $VERSION: relay1=$((i % 2)) relay2=0"; echo "$line"; '
    'printf "%s\\n" "$NAME $VERSION on port ${port:-none}" "$line" > /tmp/www/index.html; '
    "touch /tmp/healthy; sleep 3; done"
)
SENSOR_PORTS = " ".join(str(p) for p in range(18081, 18091))
RELAY_PORTS = " ".join(str(p) for p in range(18091, 18101))


def _image(name: str, version: str, ports: str, script: str) -> str:
    return (
        f"ENV NAME={name} VERSION={version} PORTS={json.dumps(ports)}\n"
        f'CMD ["/bin/sh", "-c", {json.dumps(script)}]'
    )


DEMO_IMAGES = {
    "demo/temp-sensor:1.2.0": _image("temp-sensor", "1.2.0", SENSOR_PORTS, _SENSOR),
    "demo/temp-sensor:1.3.0": _image("temp-sensor", "1.3.0", SENSOR_PORTS, _SENSOR),
    "demo/relay-controller:1.2.0": _image("relay-controller", "1.2.0", RELAY_PORTS, _RELAY),
}


def bundle_yaml(registry: Registry, version: str, sensor_tag: str) -> str:
    return f"""bundle: warehouse-monitor
version: {version}
description: Demo warehouse monitor (temperature sensor + relay controller)
update:
  strategy: download-then-kill
  health_window: 30s
containers:
  - name: temp-sensor
    image: {registry.ref("demo/temp-sensor:" + sensor_tag)}
    network_mode: host
    env:
      SAMPLE_INTERVAL: "2"
    healthcheck:
      type: exec
      command: ["/bin/sh", "-c", "test -f /tmp/healthy"]
      interval: 10s
      timeout: 2s
      retries: 2
      start_period: 5s
    resources:
      memory: 32Mi
  - name: relay-controller
    image: {registry.ref("demo/relay-controller:1.2.0")}
    network_mode: host
    healthcheck:
      type: exec
      command: ["/bin/sh", "-c", "test -f /tmp/healthy"]
      interval: 10s
      timeout: 2s
      retries: 2
      start_period: 5s
"""

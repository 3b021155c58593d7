"""``signalbeam-agent status`` (a subprocess on a real store file) shows the update gate:
the deferral last reported and every lock held, lock files and local-API locks alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.store import Store, updatelocks

REPO = Path(__file__).resolve().parents[2]


def test_status_shows_the_deferral_and_the_locks(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'data_dir = "data"\ndevice_id = "lock-cli"\n[update]\nlock_dir = "{tmp_path}/locks"\n'
    )
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "temp-sensor.lock").write_text("temp-sensor\n")
    with Store.open(tmp_path / "data" / "agent.db", device_id="lock-cli") as store:
        updatelocks.hold(store, "anna", "on site", "test")
        reason = "locked by anna since 2026-12-04T21:00+01:00 (and 1 more)"
        updatelocks.report_gate(
            store,
            {"state": "deferred", "kind": "locked", "reason": reason, "generation": 4,
             "bundle_ref": "hello@2.0.0", "until": None, "locks": []},
        )  # fmt: skip
    run = [sys.executable, "-m", "agent", "status", "--config", str(cfg)]
    out = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert f"update      hello@2.0.0 deferred: {reason}" in out.stdout
    assert "temp-sensor (file:temp-sensor.lock) since" in out.stdout
    assert "anna (api) since" in out.stdout
    doc = json.loads(
        subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=60,
                       cwd=REPO).stdout
    )  # fmt: skip
    assert doc["gate"]["state"] == "deferred"
    assert sorted(lk["who"] for lk in doc["update_locks"]) == ["anna", "temp-sensor"]

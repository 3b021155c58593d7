"""The operator's signing verbs that need no hub (tui/signing_cli.py), run in-process: keys,
signing a bundle whose images are already pinned, and the exit codes of what goes wrong."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bundles.signing import TrustSet, verify_bundle
from tui.cli import run

D1 = "sha256:" + "d" * 64


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "keys"
    monkeypatch.setenv("SIGNALBEAM_KEYS_DIR", str(d))
    return d


def _bundle(tmp_path: Path, image: str) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(
        f"bundle: app\nversion: 1.0.0\ncontainers:\n  - name: web\n    image: {image}\n"
    )
    return path


def test_signing_key_create_and_list(keys: Path) -> None:
    code, out, _ = _run("signing-key", "create", "ops", "-o", "json")
    made = json.loads(out)
    assert code == 0 and made["public_key"].startswith("ed25519:")
    assert (keys.stat().st_mode & 0o777) == 0o700
    assert ((keys / "ops.key").stat().st_mode & 0o777) == 0o600
    code, _, err = _run("signing-key", "create", "ops")
    assert code == 2 and "exists already" in err
    code, out, _ = _run("signing-key", "list", "-o", "json")
    assert json.loads(out)["items"][0]["key_id"] == made["key_id"]


def test_sign_a_pinned_bundle_offline(keys: Path, tmp_path: Path) -> None:
    _run("signing-key", "create", "ops")
    path = _bundle(tmp_path, f"127.0.0.1:5000/app:1.0@{D1}")
    code, out, err = _run("bundle", "sign", str(path))
    assert code == 0, err
    signed = json.loads((tmp_path / "app.signed.json").read_text())
    assert signed["signalbeam_signed_bundle"] == 1
    public = (keys / "ops.pub").read_text().strip()
    assert verify_bundle(signed["spec"], signed["signatures"], TrustSet(1, True, (public,))).ok
    assert "signed with ops" in out


def test_sign_exit_codes(keys: Path, tmp_path: Path) -> None:
    path = _bundle(tmp_path, "127.0.0.1:1/app:1.0")
    code, _, err = _run("bundle", "sign", str(path))
    assert code == 2 and "name the signing key" in err  # no key yet: bad input
    _run("signing-key", "create", "ops")
    code, _, err = _run("bundle", "sign", str(path))
    assert code == 1 and "cannot reach the registry at http://127.0.0.1:1" in err
    code, _, err = _run("bundle", "push", "--sign", "--key", "nope", str(path))
    assert code == 2 and "no signing key nope" in err


def test_the_old_verb_names_still_work_and_name_the_new_ones(keys: Path) -> None:
    """`keys` (signing keys) and `key` (API keys) sat one letter apart: they are now
    `signing-key` and `api-key`, and the old names do the same with a notice on stderr."""
    code, out, err = _run("keys", "create", "ops", "-o", "json")
    assert code == 0 and json.loads(out)["name"] == "ops"  # stdout as before
    assert err == "signalbeam keys create is deprecated: use signalbeam signing-key create\n"
    code, out, err = _run("signing-key", "list", "-o", "json")
    assert code == 0 and err == "" and json.loads(out)["items"][0]["name"] == "ops"
    from tui.cli import build_parser

    old = build_parser().parse_args(["key", "create", "ci", "--role", "admin"])
    new = build_parser().parse_args(["api-key", "create", "ci", "--role", "admin"])
    assert old.request(old) == new.request(new) == ("keys.create", {"name": "ci", "role": "admin"})
    assert old.deprecated == ("key create", "api-key create")
    assert getattr(new, "deprecated", None) is None

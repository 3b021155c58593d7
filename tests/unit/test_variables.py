"""Per-device variables and secrets: the reference grammar and its checks at push (with
lines), pinning and opening, the hub's precedence rule, sealing, the vault, and the desired
documents the hub resolves from a real SQLite store (no secret in clear, a stable hash, a
new one on rotation)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bundles import BundleInvalid, parse_bundle
from bundles.variables import VariableError, open_secrets, pin, references
from hub.bus import DESIRED_STALE
from hub.desired import Membership
from hub.store import Store
from hub.sync.desired_kv import resolve_documents
from hub.variables import Setting, resolve
from hub.vault import Vault
from protocol.desired import DesiredState
from sbutil.seal import SealError, SealKey, open_sealed, seal

BUNDLE = """\
bundle: app
version: 1.0.0
containers:
  - name: web
    image: registry.local/web:1.0
    command: [sh, -c, 'echo ${HOME}']
    env:
      SITE: "${SITE_NAME}"
      TOKEN: "${secret:API_TOKEN}"
      LITERAL: "$${NOT_A_VAR}"
"""


def test_references_and_validation_lines() -> None:
    spec = parse_bundle(BUNDLE).to_dict()
    refs = references(spec)
    assert refs.variables == {"SITE_NAME"} and refs.secrets == {"API_TOKEN"}
    bad = BUNDLE.replace("'echo ${HOME}'", "'echo ${secret:API_TOKEN}'").replace(
        '"${SITE_NAME}"', '"${SITE_NAME:-x}"'
    )
    with pytest.raises(BundleInvalid) as exc:
        parse_bundle(bad)
    errors = {(e.path, e.line) for e in exc.value.errors}
    assert ("containers[0].command[2]", 6) in errors  # a secret outside env: ps shows it
    assert ("containers[0].env.SITE", 8) in errors  # an unknown form of reference
    assert "secret" in str(exc.value) and "${SITE_NAME:-x}" in str(exc.value)


def test_pin_then_open_at_create() -> None:
    spec = parse_bundle(BUNDLE).to_dict()
    pinned = pin(spec, {"SITE_NAME": "north ${x}"}, {"API_TOKEN": "ab" * 8})
    assert pinned is not None
    env = pinned["containers"][0]["env"]
    assert env["TOKEN"] == "${secret:API_TOKEN@" + "ab" * 8 + "}"
    assert "hunter2" not in json.dumps(pinned)
    got = open_secrets(env, lambda n, fp: "hunter2" if (n, fp) == ("API_TOKEN", "ab" * 8) else None)
    assert got == {"SITE": "north ${x}", "TOKEN": "hunter2", "LITERAL": "${NOT_A_VAR}"}
    with pytest.raises(VariableError, match="variable SITE_NAME is not set"):
        pin(spec, {}, {"API_TOKEN": "ab" * 8})
    with pytest.raises(VariableError, match="secret API_TOKEN is not set"):
        pin(spec, {"SITE_NAME": "n"}, {})
    with pytest.raises(VariableError, match="not held"):
        open_secrets(env, lambda n, fp: None)
    # A rotated value pins to another fingerprint: another spec hash, a new container.
    other = pin(spec, {"SITE_NAME": "north ${x}"}, {"API_TOKEN": "cd" * 8})
    assert other != pinned


def _s(scope: str, target: str, value: str, at: str, kind: str = "var") -> Setting:
    return Setting(kind, scope, target, "X", value, at)


def test_precedence_device_over_group_over_fleet() -> None:
    m = Membership("d1", frozenset({"a", "b"}))
    fleet, ga, gb = (
        _s("fleet", "", "f", "1"),
        _s("group", "a", "ga", "2"),
        _s("group", "b", "gb", "2"),
    )
    dev, other = _s("device", "d1", "d", "0"), _s("device", "d2", "x", "9")
    assert resolve(m, [fleet], "var")["X"].source == "fleet"
    # Two groups set at the same time: the name that sorts first wins; newer wins otherwise.
    r = resolve(m, [fleet, gb, ga], "var")["X"]
    assert (r.value, r.source, r.shadowed) == ("ga", "group:a", ("fleet", "group:b"))
    newer_b = _s("group", "b", "gb", "3")
    assert resolve(m, [fleet, ga, newer_b], "var")["X"].value == "gb"
    assert resolve(m, [fleet, ga, newer_b, dev, other], "var")["X"].source == "device:d1"
    assert resolve(Membership("d3"), [ga, dev], "var") == {}
    assert resolve(m, [fleet], "secret") == {}


def test_seal_opens_only_with_the_device_key(tmp_path: Path) -> None:
    key = SealKey.load_or_create(tmp_path)
    assert os.stat(tmp_path / "seal.key").st_mode & 0o777 == 0o600
    assert SealKey.load_or_create(tmp_path).public == key.public  # kept, not remade
    blob = seal(key.public, b"hunter2")
    assert b"hunter2" not in blob.encode() and seal(key.public, b"hunter2") != blob
    assert open_sealed(key, blob) == b"hunter2"
    with pytest.raises(SealError):
        open_sealed(SealKey.generate(), blob)


def test_vault_encrypts_bound_to_the_name(tmp_path: Path) -> None:
    v = Vault.load_or_create(tmp_path / "vault.key")
    assert os.stat(tmp_path / "vault.key").st_mode & 0o777 == 0o600
    blob = v.encrypt("fleet", "", "A", "hunter2")
    assert b"hunter2" not in blob and v.decrypt("fleet", "", "A", blob) == "hunter2"
    with pytest.raises(Exception, match="does not decrypt"):
        v.decrypt("fleet", "", "B", blob)
    again = Vault.load_or_create(tmp_path / "vault.key")
    assert again.fingerprint("A", "x") == v.fingerprint("A", "x") != v.fingerprint("A", "y")


def _store(tmp_path: Path) -> tuple[Store, dict[str, SealKey]]:
    store = Store.open(tmp_path / "hub.db")
    store.vault = Vault.load_or_create(tmp_path / "vault.key")
    keys = {}
    for d in ("d1", "d2"):
        store.upsert_device(d, "acme")
        keys[d] = SealKey.load_or_create(tmp_path / d)
        store.set_seal_key(d, keys[d].public)
    spec = parse_bundle(BUNDLE).to_dict()
    store.put_bundle_version("app", "1.0.0", spec, "hash-1", "")
    store.create_group("north")
    store.add_to_group("north", "d1")
    store.assign("group", "north", "app", "1.0.0")
    store.assign("device", "d2", "app", "1.0.0")
    return store, keys


def test_desired_documents_carry_values_per_device(tmp_path: Path) -> None:
    store, keys = _store(tmp_path)
    store.set_variable("var", "fleet", "", "SITE_NAME", "fleet-site", "t")
    store.set_variable("var", "group", "north", "SITE_NAME", "north-site", "t")
    store.set_variable("secret", "device", "d1", "API_TOKEN", "hunter2-d1", "t")
    docs = {d: doc.final() for d, doc in resolve_documents(store, None).items()}
    d1 = DesiredState.from_json(docs["d1"].doc)
    d2 = DesiredState.from_json(docs["d2"].doc)
    assert d1.variables == {"SITE_NAME": "north-site"}
    assert d2.variables == {"SITE_NAME": "fleet-site"}
    assert d2.secrets is None  # no API_TOKEN reaches d2: its agent refuses, naming it
    assert d1.secrets is not None
    assert b"hunter2" not in docs["d1"].doc
    assert json.loads(open_sealed(keys["d1"], d1.secrets["sealed"])) == {"API_TOKEN": "hunter2-d1"}
    with pytest.raises(SealError):
        open_sealed(keys["d2"], d1.secrets["sealed"])
    # The seal differs each time; the document's hash does not, until the value rotates.
    again = resolve_documents(store, ["d1"])["d1"].final()
    assert again.doc != docs["d1"].doc and again.doc_hash == docs["d1"].doc_hash
    store.set_variable("secret", "device", "d1", "API_TOKEN", "hunter3", "t")
    assert resolve_documents(store, ["d1"])["d1"].doc_hash != docs["d1"].doc_hash
    # Nothing in the DB file holds the value in clear.
    store.close()
    for f in tmp_path.glob("hub.db*"):
        assert b"hunter2" not in f.read_bytes() and b"hunter3" not in f.read_bytes()


def test_list_shows_no_secret_value(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    assert store.set_variable("secret", "fleet", "", "API_TOKEN", "hunter2", "ops")
    assert not store.set_variable("secret", "fleet", "", "API_TOKEN", "hunter2", "ops")
    items: list[dict[str, Any]] = store.list_variables("secret")
    assert [i["name"] for i in items] == ["API_TOKEN"] and "hunter2" not in json.dumps(items)
    assert store.unset_variable("secret", "fleet", "", "API_TOKEN")
    assert store.list_variables("secret") == []


def test_agent_refuses_what_it_cannot_resolve_or_open(tmp_path: Path) -> None:
    from agent.secretbox import SecretBox, problem

    spec = parse_bundle(BUNDLE).to_dict()
    key = SealKey.load_or_create(tmp_path)
    sealed = seal(key.public, json.dumps({"API_TOKEN": "hunter2"}).encode())
    secrets = {"fingerprints": {"API_TOKEN": "ab" * 8}, "sealed": sealed}
    ok = DesiredState(3, spec, variables={"SITE_NAME": "n"}, secrets=secrets)
    assert problem(ok, key) is None
    assert "variable SITE_NAME is not set" in str(problem(replace(ok, variables=None), key))
    assert "secret API_TOKEN is not set" in str(problem(replace(ok, secrets=None), key))
    assert "no sealing key" in str(problem(ok, None))
    assert "cannot be opened" in str(problem(ok, SealKey.generate()))
    box = SecretBox(tmp_path, lambda: [secrets])
    assert box.get("API_TOKEN", "ab" * 8) == "hunter2"
    assert box.get("API_TOKEN", "cd" * 8) is None


def test_api_verbs_and_device_show(tmp_path: Path) -> None:
    from hub.api.handlers import HANDLERS, Caller

    store, _ = _store(tmp_path)
    ops = Caller("k1", "ops", "admin")

    def call(verb: str, **body: Any) -> Any:
        return HANDLERS[verb](store, body, ops)

    out = call("vars.set", scope="group", target="north", name="SITE_NAME", value="north")
    assert out.result["changed"] and out.changes[0].data == {"devices": ["d1"]}
    call("vars.set", scope="fleet", name="SITE_NAME", value="fleet")
    secret = call("secrets.set", scope="fleet", name="API_TOKEN", value="hunter2")
    assert "hunter2" not in json.dumps(secret.result) + repr(secret.changes)
    shown = call("devices.get", id="d1").result
    assert shown["variables"] == [
        {"name": "SITE_NAME", "value": "north", "source": "group:north", "shadows": ["fleet"]}
    ]
    assert [(s["name"], s["source"]) for s in shown["secrets"]] == [("API_TOKEN", "fleet")]
    assert "hunter2" not in json.dumps(shown)
    with pytest.raises(Exception, match="value must be a string") as exc:
        call("secrets.set", scope="fleet", name="API_TOKEN", value="x\x00hunter2")
    assert "hunter2" not in str(exc.value)
    with pytest.raises(Exception, match="no group"):
        call("vars.set", scope="group", target="south", name="SITE_NAME", value="x")
    # A device joining a group gets its document re-resolved even if its bundle stays (a
    # request to the writer, which publishes the notice only if the document differs).
    moved = call("groups.add", name="north", device="d2")
    assert any(
        (c.kind, c.action) == DESIRED_STALE and c.data["devices"] == ["d2"] for c in moved.changes
    )


def test_cli_never_takes_a_secret_as_an_argument(tmp_path: Path) -> None:
    import io

    from tui import cli
    from tui.vars_cli import read_secret

    parser = cli.build_parser()
    with pytest.raises(SystemExit):  # a value in argv (and so in ps) is a usage error
        parser.parse_args(["secrets", "set", "API_TOKEN", "hunter2", "--fleet"])
    f = tmp_path / "v"
    f.write_text("hunter2\n")
    a = parser.parse_args(
        ["secrets", "set", "API_TOKEN", "--group", "north", "--from-file", str(f)]
    )
    assert a.request(a) == (
        "secrets.set",
        {"scope": "group", "target": "north", "name": "API_TOKEN", "value": "hunter2"},
    )
    assert read_secret(None, io.StringIO("from-stdin\n")) == "from-stdin"
    a = parser.parse_args(["vars", "set", "SITE", "lab", "--device", "d1"])
    assert a.request(a) == (
        "vars.set",
        {"scope": "device", "target": "d1", "name": "SITE", "value": "lab"},
    )


def test_push_names_references_set_nowhere_yet(tmp_path: Path) -> None:
    from hub.api.handlers import HANDLERS, Caller

    store = Store.open(tmp_path / "hub.db")
    store.vault = Vault.load_or_create(tmp_path / "vault.key")
    ops = Caller("k1", "ops", "admin")
    store.set_variable("var", "group", "north", "SITE_NAME", "n", "ops")
    spec = parse_bundle(BUNDLE).to_dict()
    out = HANDLERS["bundles.push"](store, {"spec": spec}, ops).result
    assert out["unset"] == [
        "containers[0].env.TOKEN: secret API_TOKEN is set for no fleet, group or device yet"
    ]
    store.close()


def test_group_delete_and_decommission_drop_their_values(tmp_path: Path) -> None:
    from hub.api.handlers import HANDLERS, Caller

    store, _ = _store(tmp_path)
    ops = Caller("k1", "ops", "admin")
    store.set_variable("var", "group", "north", "SITE_NAME", "north", "ops")
    store.set_variable("secret", "device", "d2", "API_TOKEN", "hunter2", "ops")
    store.unassign("group", "north")
    out = HANDLERS["groups.delete"](store, {"name": "north"}, ops)
    assert any(
        (c.kind, c.action) == DESIRED_STALE and c.data["devices"] == ["d1"] for c in out.changes
    )
    HANDLERS["groups.create"](store, {"name": "north"}, ops)
    assert store.list_variables("var") == []  # a new group of the name starts empty
    HANDLERS["devices.decommission"](store, {"id": "d2"}, ops)
    assert store.list_variables("secret") == [] and store.seal_keys(["d2"]) == {}


def test_tui_describe_lists_values_with_their_source() -> None:
    from tui.models.detail import describe_lines

    device = {
        "id": "d1",
        "variables": [{"name": "SITE", "value": "north", "source": "group:north", "shadows": []}],
        "secrets": [{"name": "API_TOKEN", "fingerprint": "ab" * 8, "source": "fleet"}],
    }
    lines = describe_lines(device, 0.0)
    assert "Variable:    SITE = north (from group:north)" in lines
    assert f"Secret:      API_TOKEN = {'ab' * 8} (from fleet)" in lines


def test_an_aliased_secret_is_refused_outside_env_too() -> None:
    from bundles.variables import check_document

    shared = {"A": "${secret:TOKEN}"}  # one YAML node under env and labels (an alias)
    doc = {"containers": [{"name": "web", "env": shared, "labels": shared}]}
    assert [p for p, _ in check_document(doc)] == [("containers", 0, "labels", "A")]
    bomb: list[object] = ["x"] * 10
    for _ in range(30):
        bomb = [bomb] * 10  # 10**30 leaves if walked path by path
    assert check_document({"a": bomb, "containers": [{"env": {"B": "${secret:T}"}}]}) == []


def test_a_secret_rotated_mid_rollout_resends_the_rollouts_revision(tmp_path: Path) -> None:
    """A rollout's device whose secret rotates mid-rollout gets a new document of the same
    rollout (same version, same rollout id, a new hash): the agent applies it as a newer
    revision of that rollout, which the rollout follows without counting the superseded one
    as a failure (tests/unit/test_rollout_engine.py::
    test_a_newer_revision_of_the_same_rollout_supersedes_without_failing). A device of a
    phase not written yet keeps the old version with the new value. (Regression guard:
    this already held.)"""
    from hub.rollouts import engine, service
    from hub.rollouts import machine as m

    store, _ = _store(tmp_path)
    two = parse_bundle(BUNDLE.replace("version: 1.0.0", "version: 2.0.0")).to_dict()
    store.put_bundle_version("app", "2.0.0", two, "hash-2", "")
    store.add_to_group("north", "d2")
    store.set_device_status("d1", "online")
    store.set_device_status("d2", "online")
    store.set_variable("secret", "group", "north", "API_TOKEN", "hunter2", "t")
    store.set_variable("var", "fleet", "", "SITE_NAME", "site", "t")
    rid = service.create(
        store, "group", "north", "app", "2.0.0", 0, m.Share(count=0), m.parse_phases("1,100%")
    )
    engine.tick(store)
    before = resolve_documents(store, ["d1", "d2"])
    assert (before["d1"].bundle_ref, before["d1"].rollout_id) == ("app@2.0.0", rid)
    store.set_variable("secret", "group", "north", "API_TOKEN", "hunter3", "t")
    after = resolve_documents(store, ["d1", "d2"])
    assert (after["d1"].bundle_ref, after["d1"].rollout_id) == ("app@2.0.0", rid)
    assert after["d1"].doc_hash != before["d1"].doc_hash
    assert (after["d2"].bundle_ref, after["d2"].rollout_id) == ("app@1.0.0", None)
    assert after["d2"].doc_hash != before["d2"].doc_hash

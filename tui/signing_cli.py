"""Bundle-signing keys and signed bundles in the operator's CLI (docs/security.md).

The private keys live here, with the operator, never on the hub:
``$SIGNALBEAM_KEYS_DIR`` or ``~/.config/signalbeam/keys`` (0700), one ``NAME.key`` (PEM,
PKCS#8, 0600) and ``NAME.pub`` (``ed25519:...``) per key.

- ``signalbeam signing-key create NAME`` / ``signing-key list``: offline.
- ``signalbeam signing-key trusted``: the fleet's trust set as the hub relays it.
- ``signalbeam signing-key trust NAME`` / ``signing-key retire NAME|ID`` / ``signing-key require yes|no``: the
  next trust set, signed with ``--with`` (a key the fleet trusts now) and pushed.
- ``signalbeam bundle sign FILE``: pin every image by digest (asked of its registry), sign,
  write ``FILE.signed.json``; ``bundle push --sign FILE`` does both and pushes; ``bundle push``
  of a ``.signed.json`` pushes it with its signatures; ``bundle resign NAME@VERSION`` adds a
  signature by another key to a stored version (a key rotation).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tui.cliutil import output_format
from tui.errors import EXIT_USAGE, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bundles.model import BundleSpec

ENVELOPE = "signalbeam_signed_bundle"  # the signed file's marker field (its format version)
Send = Callable[[argparse.Namespace, str, dict[str, Any]], dict[str, Any]]
Show = Callable[[str, dict[str, Any], argparse.Namespace, TextIO], None]


class SigningKeyError(UsageError):
    """A signing key that is missing, exists already or cannot be read (bad input: exit 2)."""


def _load_bundle(path: str) -> BundleSpec:
    from bundles.validate import load_file

    return load_file(path)


def keys_dir(args: argparse.Namespace | None = None) -> Path:
    given = getattr(args, "keys_dir", None) if args is not None else None
    if given:
        return Path(given)
    env = os.environ.get("SIGNALBEAM_KEYS_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "signalbeam" / "keys"


def create_key(directory: Path, name: str) -> dict[str, str]:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from bundles.signing import generate_key, key_id
    from bundles.versions import bundle_name_error

    if bundle_name_error(name):
        raise SigningKeyError(f"key name {name!r}: {bundle_name_error(name)}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    path = directory / f"{name}.key"
    if path.exists():
        raise SigningKeyError(f"key {name} exists already ({path})")
    private, public = generate_key()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    (directory / f"{name}.pub").write_text(public + "\n", encoding="ascii")
    return {"name": name, "key_id": key_id(public), "public_key": public, "path": str(path)}


def list_keys(directory: Path) -> list[dict[str, str]]:
    from bundles.signing import SigningError, key_id

    out = []
    for pub in sorted(directory.glob("*.pub")) if directory.is_dir() else []:
        text = pub.read_text(encoding="ascii").strip()
        try:
            kid = key_id(text)
        except SigningError:
            continue
        out.append(
            {
                "name": pub.stem,
                "key_id": kid,
                "public_key": text,
                "private": "yes" if (directory / f"{pub.stem}.key").exists() else "no",
            }
        )
    return out


def load_key(directory: Path, name: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    path = directory / f"{name}.key"
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningKeyError(
            f"no signing key {name} in {directory} (signalbeam signing-key create)"
        ) from None
    except (OSError, ValueError) as exc:
        raise SigningKeyError(f"signing key {path} is unreadable: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an ed25519 key")
    return key


def _public(directory: Path, name_or_id: str) -> str:
    """A public key by local key name, key id, or as ``ed25519:...`` text."""
    if name_or_id.startswith("ed25519:"):
        return name_or_id
    for k in list_keys(directory):
        if name_or_id in (k["name"], k["key_id"]):
            return k["public_key"]
    raise SigningKeyError(f"no key named {name_or_id} in {directory}")


def _one_key(args: argparse.Namespace, directory: Path) -> str:
    if args.key:
        return str(args.key)
    names = [k["name"] for k in list_keys(directory) if k["private"] == "yes"]
    if len(names) != 1:
        raise SigningKeyError(
            f"name the signing key with --key ({len(names)} private keys in {directory})"
        )
    return names[0]


# --- signing bundles ------------------------------------------------------------------------
def sign_spec(
    spec: BundleSpec, private: Ed25519PrivateKey, insecure: list[str]
) -> tuple[BundleSpec, dict[str, Any]]:
    """Pin every image by the digest its registry serves now, then sign."""
    from bundles.image import parse_image_ref
    from bundles.signing import pin_images, sign_bundle
    from tui.registry import resolve_digest

    digests = {
        c.image: resolve_digest(c.image, insecure=insecure)
        for c in spec.containers
        if parse_image_ref(c.image).digest is None
    }
    pinned = pin_images(spec, digests)
    return pinned, sign_bundle(pinned, private)


def read_signed(path: str) -> tuple[BundleSpec, list[dict[str, Any]]] | None:
    """A ``.signed.json`` file's spec and signatures; None for a plain bundle file."""
    from bundles.errors import BundleError
    from bundles.validate import from_dict

    if not path.endswith(".json"):
        return None
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or ENVELOPE not in doc:
        return None
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or not isinstance(doc.get("spec"), dict):
        raise BundleError(f"{path}: a signed bundle needs spec and signatures")
    return from_dict(doc["spec"]), sigs


def envelope(spec: BundleSpec, signatures: list[dict[str, Any]]) -> dict[str, Any]:
    return {ENVELOPE: 1, "spec": spec.to_dict(), "signatures": signatures}


def cmd_bundle_sign(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        directory = keys_dir(args)
        name = _one_key(args, directory)
        private = load_key(directory, name)
        found = read_signed(args.file)
        spec = found[0] if found else _load_bundle(args.file)
        pinned, sig = sign_spec(spec, private, args.insecure_registry or [])
    except Exception as exc:
        return _offline_error(exc, err)
    sigs = [s for s in (found[1] if found else []) if s.get("key_id") != sig["key_id"]] + [sig]
    target = Path(args.output_file or _signed_name(args.file))
    target.write_text(json.dumps(envelope(pinned, sigs), indent=2) + "\n", encoding="utf-8")
    result = {"file": str(target), "bundle": pinned.ref, "key_id": sig["key_id"],
              "images": sig["images"]}  # fmt: skip
    if output_format(args) == "json":
        print(json.dumps(result), file=out)
    else:
        print(f"{pinned.ref} signed with {name} ({sig['key_id']}) -> {target}", file=out)
        for c, image in sig["images"].items():
            print(f"  {c}: {image}", file=out)
    return 0


def _signed_name(path: str) -> str:
    p = Path(path)
    stem = p.name.rsplit(".", 1)[0] if "." in p.name else p.name
    return str(p.with_name(f"{stem}.signed.json"))


def request_bundle_push(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    found = read_signed(args.file)
    if args.sign:
        directory = keys_dir(args)
        private = load_key(directory, _one_key(args, directory))
        spec = found[0] if found else _load_bundle(args.file)
        pinned, sig = sign_spec(spec, private, args.insecure_registry or [])
        others = [s for s in (found[1] if found else []) if s.get("key_id") != sig["key_id"]]
        return "bundles.push", {"spec": pinned.to_dict(), "signatures": [*others, sig]}
    if found:
        return "bundles.push", {"spec": found[0].to_dict(), "signatures": found[1]}
    return "bundles.push", {"spec": _load_bundle(args.file).to_dict()}


def cmd_bundle_resign(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from bundles.signing import sign_bundle
    from bundles.validate import from_dict

    send, show = args.hub_send, args.hub_show
    name, _, version = args.ref.partition("@")
    try:
        directory = keys_dir(args)
        private = load_key(directory, _one_key(args, directory))
    except Exception as exc:
        return _offline_error(exc, err)
    stored = send(args, "bundles.get", {"name": name, **({"version": version} if version else {})})
    spec = from_dict(stored["spec"])
    try:
        sig = sign_bundle(spec, private)
    except Exception as exc:
        return _offline_error(exc, err)
    body = {"name": spec.bundle, "version": spec.version, "signature": sig}
    show("bundles.sign", send(args, "bundles.sign", body), args, out)
    return 0


# --- the trust set ----------------------------------------------------------------------------
def _next_set(
    args: argparse.Namespace,
    out: TextIO,
    change: Callable[[set[str], bool], tuple[set[str], bool]],
) -> int:
    """Read the fleet's newest trust set, change it, sign the next one, push it."""
    from bundles.signing import parse_trust_set, sign_trust_set

    send, show = args.hub_send, args.hub_show
    directory = keys_dir(args)
    current = parse_trust_set(send(args, "trust.get", {})["trust"])
    keys, require = change(set(current.keys), current.require)
    signer = args.with_key or _default_signer(directory, current.key_ids)
    private = load_key(directory, signer)
    new = sign_trust_set(current.serial + 1, require, keys, private)
    body: dict[str, Any] = {"trust": new.to_dict()}
    if getattr(args, "force", False):
        body["force"] = True
    show("trust.push", send(args, "trust.push", body), args, out)
    return 0


def _default_signer(directory: Path, trusted: dict[str, str]) -> str:
    mine = [k for k in list_keys(directory) if k["private"] == "yes"]
    usable = [k["name"] for k in mine if k["key_id"] in trusted] if trusted else []
    if not trusted and len(mine) == 1:
        return mine[0]["name"]
    if len(usable) == 1:
        return usable[0]
    raise SigningKeyError(
        "name the key that signs the new trust set with --with (one the fleet trusts now)"
    )


def cmd_keys(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    send, show = args.hub_send, args.hub_show
    try:
        directory = keys_dir(args)
        if args.keys_verb == "create":
            result: Any = create_key(directory, args.name)
            if output_format(args) == "json":
                print(json.dumps(result), file=out)
            else:
                print(f"created signing key {result['name']} ({result['key_id']})", file=out)
                print(f"  public key: {result['public_key']}", file=out)
                print(f"  private key: {result['path']} (keep it off the hub)", file=out)
                print(f"  next: signalbeam signing-key trust {result['name']}", file=out)
            return 0
        if args.keys_verb == "list":
            items = list_keys(directory)
            if output_format(args) == "json":
                print(json.dumps({"items": items}), file=out)
            else:
                from tui.output import table

                table(items, ["name", "key_id", "private", "public_key"], out)
            return 0
        if args.keys_verb == "trusted":
            show("trust.get", send(args, "trust.get", {}), args, out)
            return 0
        if args.keys_verb == "trust":
            added = {_public(directory, n) for n in args.names}
            return _next_set(args, out, lambda keys, req: (keys | added, req))
        if args.keys_verb == "retire":
            gone = {_public(directory, n) for n in args.names}
            return _next_set(args, out, lambda keys, req: (keys - gone, req))
        if args.keys_verb == "require":
            want = args.value == "yes"
            return _next_set(args, out, lambda keys, req: (keys, want))
    except (SigningKeyError, OSError) as exc:
        return _offline_error(exc, err)
    raise AssertionError(args.keys_verb)


def _offline_error(exc: Exception, err: TextIO) -> int:
    """Exit code and message of an offline verb's failure: ours say their code (a registry
    that cannot be asked is 1, like a hub; a missing key 2), a bad bundle or file is 2."""
    from bundles.errors import BundleError
    from tui.errors import TuiError

    if isinstance(exc, TuiError):
        print(f"error: {exc}", file=err)
        return exc.exit_code
    if isinstance(exc, BundleError | OSError):
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    raise exc


def print_trust(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    from bundles.signing import key_id

    t = r.get("trust") or {}
    print(
        f"trust set serial {t.get('serial')}: unsigned bundles "
        f"{'refused' if t.get('require') else 'allowed'}",
        file=out,
    )
    for k in t.get("keys") or []:
        print(f"  {key_id(k)}  {k}", file=out)
    if not t.get("keys"):
        print(
            "  no keys yet: signalbeam signing-key create NAME,"
            " then signalbeam signing-key trust NAME",
            file=out,
        )


def _signing_key_verbs(
    add: Any, name: str, send: Send, show: Show, *, deprecated: bool = False
) -> None:
    """``signalbeam NAME create|list|trusted|trust|retire|require``."""
    text = "bundle-signing keys (held here, never on the hub)"
    if deprecated:
        text = "old name of signing-key (deprecated)"
    keys = add(name, text).add_subparsers(dest="keys_verb", required=True)

    def kadd(verb: str, text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = add(verb, text, keys)
        p.add_argument("--keys-dir", help="where the keys are ($SIGNALBEAM_KEYS_DIR)")
        p.set_defaults(offline=cmd_keys, hub_send=send, hub_show=show)
        if deprecated:
            p.set_defaults(deprecated=(f"{name} {verb}", f"signing-key {verb}"))
        return p

    p = kadd("create", "make a new signing key (ed25519)")
    p.add_argument("name")
    kadd("list", "the signing keys in the keys directory")
    kadd("trusted", "the fleet's trust set, as the hub relays it")
    for verb, text in (
        ("trust", "add keys to the fleet's trust set"),
        ("retire", "remove keys from the fleet's trust set"),
    ):
        p = kadd(verb, text)
        p.add_argument("names", nargs="+", metavar="KEY", help="key name, key id or ed25519:...")
        p.add_argument("--with", dest="with_key", help="the trusted key that signs the change")
        p.add_argument(
            "--force",
            action="store_true",
            help="push it even if devices would then refuse a version they are assigned",
        )
    p = kadd("require", "whether devices refuse unsigned bundles (yes: the default)")
    p.add_argument("value", choices=["yes", "no"])
    p.add_argument("--with", dest="with_key", help="the trusted key that signs the change")
    p.add_argument("--force", action="store_true", help="as for trust and retire")


def add_signing_commands(
    add: Any, bundle: Any, printers: dict[str, Any], send: Send, show: Show
) -> None:
    """``signing-key ...`` (and its old name ``keys``) and ``bundle sign|resign``;
    ``bundle push``'s ``--sign`` is added by the caller's push parser through
    ``add_push_flags``. ``send`` and ``show`` are ``tui.cli``'s (passed in, so this module
    does not import the one that imports it)."""
    _signing_key_verbs(add, "signing-key", send, show)
    # The old name, beside ``signalbeam key`` (API keys) one letter apart: it still works and
    # says what to type instead (tui.cli prints ``deprecated``). Kept for scripts.
    _signing_key_verbs(add, "keys", send, show, deprecated=True)

    p = add("sign", "pin a bundle file's images by digest and sign it (FILE.signed.json)", bundle)
    p.add_argument("file")
    p.add_argument("-O", "--output-file", help="where to write the signed bundle")
    add_push_flags(p, sign_flag=False)
    p.set_defaults(offline=cmd_bundle_sign)
    p = add("resign", "add a signature by another key to a stored version (NAME@VERSION)", bundle)
    p.add_argument("ref")
    p.add_argument("--key", help="signing key name (default: the only one)")
    p.add_argument("--keys-dir", help="where the keys are ($SIGNALBEAM_KEYS_DIR)")
    p.set_defaults(offline=cmd_bundle_resign, hub_send=send, hub_show=show)
    printers["trust.get"] = print_trust
    printers["trust.push"] = print_trust


def add_push_flags(p: argparse.ArgumentParser, *, sign_flag: bool = True) -> None:
    if sign_flag:
        p.add_argument(
            "--sign",
            action="store_true",
            help="pin the images by digest and sign with --key before pushing",
        )
    p.add_argument("--key", help="signing key name (default: the only one)")
    p.add_argument("--keys-dir", help="where the keys are ($SIGNALBEAM_KEYS_DIR)")
    p.add_argument(
        "--insecure-registry",
        action="append",
        metavar="HOST[:PORT]",
        help="ask this registry over plain HTTP (loopback ones always are)",
    )

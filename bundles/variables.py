"""Per-device variables and secrets in a bundle's container env: the reference grammar, its
checks and the substitution. Pure: no I/O, no crypto (the hub seals, the agent opens).

Grammar (docs/bundles.md "Variables and secrets"), in env *values* only:

- ``${NAME}``: the variable NAME, resolved by the hub for each device (device over group
  over fleet);
- ``${secret:NAME}``: the secret NAME, delivered sealed to that device only;
- ``$${``: a literal ``${`` (so a value can still carry one).

Any other ``${...}`` in an env value (a default ``${X:-y}``, an unterminated ``${``) is an
error at push. Outside env values nothing is substituted (a ``${X}`` in a command is the
container's shell's business), but a ``${secret:...}`` there is refused: a command line is
visible in ``ps`` on the device, so a secret may only travel as env.

Image tags are never substituted: the image decides what code runs, and a tag chosen per
device by the hub (not by whoever signed the bundle) would get around signatures, digest
pinning and the rollout's one-version-per-revision rule.

Once the agent has a device's values, a secret reference is *pinned*: ``${secret:NAME}``
becomes ``${secret:NAME@FP}`` where FP is the hub's fingerprint of the value (an HMAC keyed
by the hub, so it reveals nothing of the value). The pinned spec is what the agent records
and hashes, so a rotated secret changes the container's spec hash (the container is
recreated) while its value is only put in at container create time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_VALUE_LEN",
    "NAME_RE",
    "References",
    "VariableError",
    "check_document",
    "open_secrets",
    "pin",
    "references",
]

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_VALUE_LEN = 64 * 1024
# One reference: ${NAME}, ${secret:NAME} or ${secret:NAME@fingerprint} (agent-pinned).
_REF = re.compile(r"\$\{(?:(secret):)?([A-Za-z_][A-Za-z0-9_]{0,127})(?:@([0-9a-f]{16,64}))?\}")
_SECRET_ANYWHERE = re.compile(r"\$\{secret:")


class VariableError(ValueError):
    """A reference that cannot be substituted (``where``: the env key or field path)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True)
class References:
    variables: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.variables or self.secrets)


def _tokens(value: str) -> Iterator[tuple[str, str | None, str | None, str | None]]:
    """Split an env value into (literal, kind, name, fingerprint) pieces; kind is "var",
    "secret" or None for a literal piece. Raises ``ValueError`` naming a bad reference."""
    i = 0
    literal: list[str] = []
    while i < len(value):
        if value.startswith("$${", i):
            literal.append("${")
            i += 3
            continue
        if value.startswith("${", i):
            m = _REF.match(value, i)
            if m is None:
                end = value.find("}", i)
                shown = value[i : end + 1] if end != -1 else value[i : i + 24]
                raise ValueError(
                    f"{shown!r} is not a reference: use ${{NAME}}, ${{secret:NAME}} or $${{ "
                    "for a literal ${"
                )
            if literal:
                yield "".join(literal), None, None, None
                literal = []
            yield m.group(0), "secret" if m.group(1) else "var", m.group(2), m.group(3)
            i = m.end()
            continue
        literal.append(value[i])
        i += 1
    if literal:
        yield "".join(literal), None, None, None


def check_value(value: str) -> str | None:
    """Why an env value's references are invalid, or None."""
    try:
        for _ in _tokens(value):
            pass
    except ValueError as exc:
        return str(exc)
    return None


def check_document(doc: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """(path, message) for every secret reference outside a container's env values. Env
    values are checked field by field by ``bundles.validate`` (``check_value``)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    # YAML aliases make one node appear under many paths (an alias bomb has 10**29 of
    # them): a shared list or mapping is walked once per place that can change the verdict
    # below it (its depth up to 4, and whether its path's third part is "env").
    seen: set[tuple[int, int, bool]] = set()

    def walk(node: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(node, (dict, list)):
            key = (id(node), min(len(path), 4), len(path) > 2 and path[2] == "env")
            if key in seen:
                return
            seen.add(key)
        if isinstance(node, str):
            if _SECRET_ANYWHERE.search(node) and not (len(path) == 4 and path[2] == "env"):
                out.append(
                    (path, "a ${secret:...} may only be used in a container's env values "
                     "(a command line or label is visible on the device, e.g. in ps)")
                )  # fmt: skip
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, str(k)))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))

    walk(doc, ())
    return out


def references(spec: Mapping[str, Any] | None) -> References:
    """The variables and secrets a bundle spec (``BundleSpec.to_dict()``) refers to."""
    vs: set[str] = set()
    ss: set[str] = set()
    containers = (spec or {}).get("containers")
    for c in containers if isinstance(containers, list) else ():
        env = c.get("env") if isinstance(c, dict) else None
        for value in env.values() if isinstance(env, dict) else ():
            if not isinstance(value, str):
                continue
            try:
                for _, kind, name, _fp in _tokens(value):
                    if kind == "var" and name:
                        vs.add(name)
                    elif kind == "secret" and name:
                        ss.add(name)
            except ValueError:
                continue  # validation names it; nothing to resolve here
    return References(frozenset(vs), frozenset(ss))


def pin(
    spec: dict[str, Any] | None,
    variables: Mapping[str, str],
    fingerprints: Mapping[str, str],
) -> dict[str, Any] | None:
    """The spec with every ``${NAME}`` replaced by its value and every ``${secret:NAME}``
    pinned to its fingerprint (``${secret:NAME@FP}``). Raises ``VariableError`` naming the
    first reference without a value (the agent refuses such a revision)."""
    if spec is None:
        return None
    out = dict(spec)
    containers = []
    found = spec.get("containers")
    if not isinstance(found, list):
        return spec  # not a bundle: validation says why
    for c in found:
        env = c.get("env") if isinstance(c, dict) else None
        if not env or not isinstance(env, dict):
            containers.append(c)
            continue
        new_env = {}
        for key, value in env.items():
            if not isinstance(value, str):
                new_env[key] = value  # validation names it
                continue
            parts = []
            try:
                tokens = list(_tokens(value))
            except ValueError as exc:
                raise VariableError(f"{c.get('name')}.env.{key}", str(exc)) from None
            for text, kind, name, _fp in tokens:
                if kind is None:
                    # A literal: written back with its ${ escaped so the result parses again.
                    parts.append(text.replace("${", "$${"))
                elif kind == "var":
                    assert name is not None
                    if name not in variables:
                        raise VariableError(
                            f"{c.get('name')}.env.{key}",
                            f"variable {name} is not set for this device (fleet, group or device)",
                        )
                    parts.append(variables[name].replace("${", "$${"))
                else:
                    assert name is not None
                    if name not in fingerprints:
                        raise VariableError(
                            f"{c.get('name')}.env.{key}",
                            f"secret {name} is not set for this device",
                        )
                    parts.append(f"${{secret:{name}@{fingerprints[name]}}}")
            new_env[key] = "".join(parts)
        containers.append({**c, "env": new_env})
    out["containers"] = containers
    return out


def open_secrets(env: Mapping[str, str], secret: Any) -> dict[str, str]:
    """A pinned env (``pin``'s) with literals unescaped and each ``${secret:NAME@FP}``
    replaced by ``secret(NAME, FP)`` (a str, or None: not held, ``VariableError``). Called
    only when a container is created, so a secret's value lives in no record."""
    out: dict[str, str] = {}
    for key, value in env.items():
        parts = []
        try:
            tokens = list(_tokens(value))
        except ValueError as exc:
            raise VariableError(f"env.{key}", str(exc)) from None
        for text, kind, name, fp in tokens:
            if kind is None:
                parts.append(text)
            elif kind == "secret" and fp is not None:
                found = secret(name, fp)
                if found is None:
                    raise VariableError(
                        f"env.{key}", f"secret {name} (fingerprint {fp}) is not held by this device"
                    )
                parts.append(found)
            else:
                # An unpinned reference at create time: the revision was not resolved.
                raise VariableError(f"env.{key}", f"{text} was not resolved for this device")
        out[key] = "".join(parts)
    return out

"""Bundle source text -> plain document, plus a line lookup for error paths.

YAML goes through ``yaml.SafeLoader`` only (no arbitrary object tags). PyYAML is imported
lazily: the device agent validates JSON from the hub with ``from_dict`` and need not pay for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bundles.errors import BundleInvalid, FieldError

if TYPE_CHECKING:
    from yaml import Node

MAX_BUNDLE_BYTES = 256 * 1024

PathParts = tuple[str | int, ...]
LineLookup = Callable[[PathParts], int | None]


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers keys it saw twice (``json`` otherwise keeps the last)."""

    duplicates: list[str]


def _json_object(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def decode(data: str | bytes, source: str) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleInvalid(
            [FieldError("$", f"is larger than {MAX_BUNDLE_BYTES} bytes, the limit for a bundle")],
            source,
        )
    if isinstance(data, str):
        return data
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BundleInvalid(
            [FieldError("$", f"is not UTF-8 text (byte {exc.start})")], source
        ) from None


def read_document(text: str, source: str) -> tuple[Any, LineLookup]:
    """Parse JSON or YAML; syntax errors and duplicate keys raise ``BundleInvalid``."""
    if text.lstrip().startswith(("{", "[")):
        try:
            doc = json.loads(text, object_pairs_hook=_json_object)
        except (ValueError, RecursionError):
            pass  # not JSON after all: YAML flow style also starts with "{"
        else:
            dups = list(_json_duplicates(doc, ()))
            lines = _lazy_yaml_lines(text)
            if dups:
                raise BundleInvalid(
                    [FieldError(format_path(p), "duplicate key", lines(p)) for p in dups], source
                )
            return doc, lines
    return _read_yaml(text, source)


def _read_yaml(text: str, source: str) -> tuple[Any, LineLookup]:
    import yaml

    try:
        # The reader checks the text for forbidden characters already in the constructor.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise BundleInvalid([FieldError("$", f"cannot parse: {exc}")], source) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lambda parts: None
        dups = list(_yaml_duplicates(node, (), set()))
        if dups:
            raise BundleInvalid(
                [FieldError(format_path(p), "duplicate key", line) for p, line in dups], source
            )
        doc = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "cannot parse"
        raise BundleInvalid(
            [FieldError("$", f"YAML syntax error: {problem}", line)], source
        ) from None
    except BundleInvalid:
        raise
    except RecursionError:
        raise BundleInvalid([FieldError("$", "is nested too deeply")], source) from None
    except Exception as exc:  # untrusted input into a third-party parser
        # PyYAML lets plain ValueErrors escape (e.g. the date 2001-02-30, a 5000-digit int).
        raise BundleInvalid([FieldError("$", f"cannot parse: {exc}")], source) from None
    finally:
        loader.dispose()
    return doc, lambda parts: _line_of(node, parts)


def _lazy_yaml_lines(text: str) -> LineLookup:
    # JSON is (nearly) YAML, so the YAML composer can map paths to lines, but only pay for it
    # when there is an error to report.
    cache: list[Node | None] = []

    def lookup(parts: PathParts) -> int | None:
        if not cache:
            import yaml

            try:
                cache.append(yaml.compose(text, Loader=yaml.SafeLoader))
            except Exception:  # line numbers are best effort
                cache.append(None)
        root = cache[0]
        return _line_of(root, parts) if root is not None else None

    return lookup


def _json_duplicates(value: Any, path: PathParts) -> Any:
    if isinstance(value, _JsonObject):
        for key in value.duplicates:
            yield (*path, key)
        for key, child in value.items():
            yield from _json_duplicates(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _json_duplicates(child, (*path, i))


def _yaml_duplicates(node: Node, path: PathParts, seen: set[int]) -> Any:
    import yaml

    # Aliases share node objects; visiting each once keeps a "billion laughs" file linear.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in keys:
                    yield (*path, key_node.value), key_node.start_mark.line + 1
                keys.add(key_node.value)
                yield from _yaml_duplicates(value_node, (*path, key_node.value), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            yield from _yaml_duplicates(child, (*path, i), seen)


def _line_of(root: Node, parts: PathParts) -> int | None:
    """1-based line of the deepest node along ``parts`` that exists in the source."""
    import yaml

    node = root
    line: int = node.start_mark.line + 1
    for part in parts:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def format_path(parts: PathParts) -> str:
    """``("containers", 1, "ports")`` -> ``"containers[1].ports"``; ``()`` -> ``"$"``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = (part if len(part) <= 64 else part[:61] + "...") or '""'
            out += f".{text}" if out else text
    return out or "$"

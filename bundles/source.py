"""Bundle source text -> plain document, plus a line lookup for error paths.

YAML goes through ``yaml.SafeLoader`` only (no arbitrary object tags). PyYAML is imported
lazily: the device agent validates JSON from the hub with ``from_dict`` and need not pay for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bundles.errors import BundleInvalid, FieldError

if TYPE_CHECKING:
    from yaml import Node, ScalarNode

MAX_BUNDLE_BYTES = 256 * 1024
# Deeper than any bundle needs (containers[0].healthcheck.command[0] is 4 levels); the limit
# turns a pathological file into one error with its line instead of a RecursionError.
MAX_DEPTH = 64

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


class BigInt(int):
    """An integer too long for Python to read from text (over 4300 digits).

    Its value stands in for "larger than any field allows" (10**40), so the validator
    reports what is wrong with the field, in the field's own words, instead of the
    interpreter's advice about ``sys.set_int_max_str_digits()``. It prints shortened.
    """

    digits: int
    negative: bool

    def __new__(cls, text: str) -> BigInt:
        negative = text.lstrip().startswith("-")
        obj = super().__new__(cls, -(10**40) if negative else 10**40)
        obj.digits = sum(ch.isdigit() for ch in text)
        obj.negative = negative
        return obj

    def __str__(self) -> str:
        return f"{'-' if self.negative else ''}<{self.digits}-digit integer>"

    __repr__ = __str__


def parse_int(text: str) -> int:
    """``int(text)``, or a ``BigInt`` where the text is too long to convert."""
    try:
        return int(text)
    except ValueError:
        if re.fullmatch(r"\s*[-+]?\d[\d_]*\s*", text):
            return BigInt(text)
        raise


def _line_at(raw: bytes | str, offset: int) -> int:
    newline: Any = b"\n" if isinstance(raw, bytes) else "\n"
    return raw.count(newline, 0, max(0, offset)) + 1


def decode(data: str | bytes, source: str) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_BUNDLE_BYTES:
        # The line where the limit is passed: where to start cutting.
        raise BundleInvalid(
            [
                FieldError(
                    "$",
                    f"is larger than {MAX_BUNDLE_BYTES} bytes, the limit for a bundle",
                    _line_at(raw, MAX_BUNDLE_BYTES),
                )
            ],
            source,
        )
    if isinstance(data, str):
        return data
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BundleInvalid(
            [FieldError("$", f"is not UTF-8 text (byte {exc.start})", _line_at(raw, exc.start))],
            source,
        ) from None


def read_document(text: str, source: str) -> tuple[Any, LineLookup]:
    """Parse JSON or YAML; syntax errors and duplicate keys raise ``BundleInvalid``."""
    if text.lstrip().startswith(("{", "[")):
        try:
            doc = json.loads(text, object_pairs_hook=_json_object, parse_int=parse_int)
        except (ValueError, RecursionError):
            pass  # not JSON after all: YAML flow style also starts with "{"
        else:
            dups = list(_json_duplicates(doc, ()))
            lines = _lazy_json_lines(text)
            if dups:
                raise BundleInvalid(
                    [FieldError(format_path(p), "duplicate key", lines(p)) for p in dups], source
                )
            return doc, lines
    return _read_yaml(text, source)


class _BadScalar(Exception):
    """A scalar PyYAML resolved to a type whose constructor refused the text."""

    def __init__(self, node: Node, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


def _loader_class() -> type:
    """``yaml.SafeLoader`` with a nesting limit and constructors that fail with a node.

    Built on first use (PyYAML is imported lazily) and cached.
    """
    if _LOADER:
        return _LOADER[0]
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Node | None, index: Any) -> Node | None:
            if self.depth >= MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"is nested more than {MAX_DEPTH} levels deep", mark
                )
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_object(self, node: Node, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (yaml.YAMLError, _BadScalar, RecursionError):
                raise
            except Exception:  # untrusted text into PyYAML's constructors
                # PyYAML lets plain ValueErrors escape (the date 2001-02-30, ...): say
                # which value, where, and what it was read as, never the exception's words.
                kind = str(node.tag).rsplit(":", 1)[-1]
                value = node.value if isinstance(node.value, str) else ""
                shown = json.dumps(value[:40]) + ("..." if len(value) > 40 else "")
                raise _BadScalar(
                    node,
                    f"{shown} reads as a {kind} but is not a valid one; quote it if it is text",
                ) from None

        def construct_yaml_int(self, node: ScalarNode) -> Any:
            try:
                return super().construct_yaml_int(node)
            except ValueError:
                text = str(node.value).replace("_", "")
                if re.fullmatch(r"[-+]?\d+", text):
                    return BigInt(text)
                raise

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    _LOADER.append(Loader)
    return Loader


_LOADER: list[type] = []


def _read_yaml(text: str, source: str) -> tuple[Any, LineLookup]:
    import yaml

    try:
        # The reader checks the text for forbidden characters already in the constructor.
        loader = _loader_class()(text)
    except yaml.reader.ReaderError as exc:
        line = _line_at(text, exc.position)
        char = (
            exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        )
        problem = f"character U+{char:04X} is not allowed in YAML (text position {exc.position})"
        raise BundleInvalid([FieldError("$", problem, line)], source) from None
    except yaml.YAMLError as exc:
        raise BundleInvalid([FieldError("$", f"cannot parse: {exc}", 1)], source) from None
    node = None
    try:
        node = loader.get_single_node()
        if node is None:
            # Empty, or only comments: the document starts (and ends) at line 1.
            return None, lambda parts: 1
        dups = list(_yaml_duplicates(node, (), set()))
        if dups:
            raise BundleInvalid(
                [FieldError(format_path(p), "duplicate key", line) for p, line in dups], source
            )
        doc = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else _loader_line(loader)
        problem = exc.problem or exc.context or "cannot parse"
        if isinstance(exc, yaml.composer.ComposerError) and "nested" in problem:
            raise BundleInvalid([FieldError("$", problem, line)], source) from None
        raise BundleInvalid(
            [FieldError("$", f"YAML syntax error: {problem}", line)], source
        ) from None
    except _BadScalar as exc:
        path = _path_of(node, exc.node) if node is not None else None
        raise BundleInvalid(
            [FieldError(format_path(path or ()), exc.message, exc.node.start_mark.line + 1)],
            source,
        ) from None
    except BundleInvalid:
        raise
    except RecursionError:
        raise BundleInvalid(
            [FieldError("$", "is nested too deeply", _loader_line(loader))], source
        ) from None
    except Exception as exc:  # untrusted input into a third-party parser
        raise BundleInvalid(
            [FieldError("$", f"cannot parse: {type(exc).__name__}", _loader_line(loader))],
            source,
        ) from None
    finally:
        loader.dispose()
    return doc, lambda parts: _line_of(node, parts)


def _loader_line(loader: Any) -> int:
    # Where the reader stopped: the best line there is for an error without a mark.
    try:
        return int(loader.get_mark().line) + 1
    except Exception:
        return 1


def _path_of(root: Node, target: Node) -> PathParts | None:
    """The path from ``root`` to ``target`` (by identity), or None; iterative, aliases once."""
    import yaml

    stack: list[tuple[Node, PathParts]] = [(root, ())]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node is target:
                    return path
                if isinstance(key_node, yaml.ScalarNode):
                    stack.append((value_node, (*path, key_node.value)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, (*path, i)) for i, child in enumerate(node.value))
    return None


def _lazy_json_lines(text: str) -> LineLookup:
    # Only pay for the index when there is an error to report. JSON is not quite YAML (a
    # "\/" escape, tabs, keys over 1024 characters), so the index comes from JSON's own
    # tokens, not from the YAML composer.
    cache: list[dict[PathParts, int]] = []

    def lookup(parts: PathParts) -> int | None:
        if not cache:
            cache.append(_json_line_index(text))
        index = cache[0]
        for n in range(len(parts), -1, -1):
            line = index.get(parts[:n])
            if line is not None:
                return line
        return 1

    return lookup


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^\s{}\[\],:"]+')


def _json_tokens(text: str) -> Iterator[tuple[str, int]]:
    line, last = 1, 0
    for m in _JSON_TOKEN.finditer(text):
        line += text.count("\n", last, m.start())
        last = m.start()
        yield m.group(), line


def _json_line_index(text: str) -> dict[PathParts, int]:
    """Path -> line of every key and list item in a JSON text that ``json`` accepted.

    Iterative (the text may nest as deep as ``json`` allows); a repeated key maps to its
    last occurrence, the one ``json`` keeps and the one a duplicate-key error is about.
    """
    index: dict[PathParts, int] = {}
    # Each open container: [path, is_object, next list index, pending key].
    stack: list[list[Any]] = []
    expect_key = False
    for tok, line in _json_tokens(text):
        if not stack and () not in index:
            index[()] = line
        top = stack[-1] if stack else None
        if tok in ("{", "["):
            if top is not None and not top[1]:
                index[(*top[0], top[2])] = line
            path = () if top is None else ((*top[0], top[3]) if top[1] else (*top[0], top[2]))
            stack.append([path, tok == "{", 0, None])
            expect_key = tok == "{"
        elif tok in ("}", "]"):
            stack.pop()
            if stack and not stack[-1][1]:
                stack[-1][2] += 1
            expect_key = False
        elif tok == ",":
            expect_key = top is not None and top[1]
        elif tok == ":":
            expect_key = False
        elif top is not None and top[1] and expect_key:
            try:
                top[3] = json.loads(tok)
            except ValueError:
                top[3] = tok
            index[(*top[0], top[3])] = line
            expect_key = False
        elif top is not None and not top[1]:
            index[(*top[0], top[2])] = line
            top[2] += 1
    return index


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

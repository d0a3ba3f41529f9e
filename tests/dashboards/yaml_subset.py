"""A strict reader for the small part of YAML that Grafana provisioning files use.

Used only when PyYAML is not importable (the project does not depend on it).
Block mappings, block sequences (``- key: value`` and ``- scalar``), comments,
plain, single- and double-quoted scalars, integers, floats, booleans and null.
Anything else (flow collections, anchors, tags, block scalars, tabs) is refused
with an error, so a file this accepts means the same to Grafana's YAML parser.
"""

from __future__ import annotations

import json
import re
from typing import Any


class YamlSubsetError(ValueError):
    pass


_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)\s*:(?:\s+|$)(.*)")


def _strip_comment(text: str, where: str) -> str:
    out, quote = [], ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            break
        out.append(ch)
    if quote:
        raise YamlSubsetError(f"{where}: unterminated quote")
    return "".join(out).rstrip()


def _scalar(text: str, where: str) -> Any:
    if not text or text in ("~", "null", "Null", "NULL"):
        return None
    if text[0] == '"':
        if not text.endswith('"') or len(text) < 2:
            raise YamlSubsetError(f"{where}: bad double-quoted string")
        return json.loads(text)  # YAML's double-quoted escapes are a superset of these
    if text[0] == "'":
        if not text.endswith("'") or len(text) < 2:
            raise YamlSubsetError(f"{where}: bad single-quoted string")
        return text[1:-1].replace("''", "'")
    if text[0] in "[]{}&*!|>%@`,?":
        raise YamlSubsetError(f"{where}: {text[0]!r} (flow, anchor, tag or block scalar) is not supported")
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if ": " in text or text.endswith(":") or " #" in text:
        raise YamlSubsetError(f"{where}: ambiguous plain scalar {text!r}")
    return text


def loads(source: str, name: str = "<yaml>") -> Any:
    lines: list[tuple[int, str, int]] = []  # (indent, content, line number)
    for number, raw in enumerate(source.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlSubsetError(f"{name}:{number}: tab in indentation")
        content = _strip_comment(raw.strip(), f"{name}:{number}")
        if content == "---" and not lines:
            continue
        if content:
            lines.append((len(raw) - len(raw.lstrip(" ")), content, number))
    value, end = _block(lines, 0, lines[0][0] if lines else 0, name)
    if end != len(lines):
        raise YamlSubsetError(f"{name}:{lines[end][2]}: unexpected indentation")
    return value


def _block(lines: list[tuple[int, str, int]], i: int, indent: int, name: str) -> tuple[Any, int]:
    if i >= len(lines):
        return None, i
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        return _sequence(lines, i, indent, name)
    return _mapping(lines, i, indent, name)


def _sequence(lines: list[tuple[int, str, int]], i: int, indent: int, name: str) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(lines) and lines[i][0] == indent and (lines[i][1].startswith("- ") or lines[i][1] == "-"):
        _, content, number = lines[i]
        rest = content[1:].lstrip()
        if not rest:
            item, i = _block(lines, i + 1, lines[i + 1][0] if i + 1 < len(lines) else indent + 2, name)
            out.append(item)
            continue
        if _KEY.fullmatch(rest):  # "- key: value" opens a mapping indented past the dash
            inner = indent + (len(content) - len(rest))
            lines[i] = (inner, rest, number)
            item, i = _mapping(lines, i, inner, name)
            out.append(item)
            continue
        out.append(_scalar(rest, f"{name}:{number}"))
        i += 1
    return out, i


def _mapping(lines: list[tuple[int, str, int]], i: int, indent: int, name: str) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        _, content, number = lines[i]
        where = f"{name}:{number}"
        match = _KEY.fullmatch(content)
        if not match:
            raise YamlSubsetError(f"{where}: expected 'key: value', got {content!r}")
        key, rest = match.group(1), match.group(2).strip()
        if key in out:
            raise YamlSubsetError(f"{where}: duplicate key {key!r}")
        i += 1
        if rest:
            out[key] = _scalar(rest, where)
        elif i < len(lines) and (lines[i][0] > indent or (lines[i][0] == indent and lines[i][1].startswith("-"))):
            out[key], i = _block(lines, i, lines[i][0], name)
        else:
            out[key] = None
    if i < len(lines) and lines[i][0] > indent:
        raise YamlSubsetError(f"{name}:{lines[i][2]}: unexpected indentation")
    return out, i

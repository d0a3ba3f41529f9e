"""Erasing a person's name from stored values. Pure.

A name is replaced where it stands as a whole word (names are
``[A-Za-z0-9_-]``, so "ana" in "banana" or "ana-2" is left alone), in plain
strings, in the values of JSON objects under the keys that hold people or
their words (never in the keys, and never in a crop's or a bed's name), and in
the string fields of a line of InfluxDB line protocol that hold them.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

# Keys whose values are people or their words, in the hub's retained messages and stored JSON.
PERSON_KEYS = frozenset({"who", "by", "acked_by", "muted_by", "on_duty", "text", "resolution", "note", "pickup",
                         "place", "change"})  # fmt: skip


def name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9_-]){re.escape(name)}(?![A-Za-z0-9_-])")


def scrub_text(text: str, name: str, alias: str) -> str:
    return name_pattern(name).sub(alias, text)


def scrub_value(value: Any, name: str, alias: str, keys: Collection[str] = PERSON_KEYS, *, inside: bool = False) -> Any:
    """``value`` with ``name`` replaced by ``alias`` in every string under one of ``keys``, recursively."""
    if isinstance(value, str):
        return scrub_text(value, name, alias) if inside else value
    if isinstance(value, list | tuple):
        return [scrub_value(v, name, alias, keys, inside=inside) for v in value]
    if isinstance(value, dict):
        return {k: scrub_value(v, name, alias, keys, inside=inside or k in keys) for k, v in value.items()}
    return value


_FIELD_RE = re.compile(r'(?P<key>[A-Za-z_]+)="(?P<value>(?:[^"\\]|\\.)*)"')


def scrub_line(text: str, name: str, alias: str, fields: Collection[str]) -> str:
    """A line of line protocol with ``name`` replaced in the string ``fields`` only (not in tags)."""
    head, sep, rest = text.partition(" ")  # measurement and tags end at the first unescaped space
    while head.endswith("\\") and sep:
        more, sep, rest = rest.partition(" ")
        head = f"{head} {more}"

    def one(m: re.Match[str]) -> str:
        if m.group("key") not in fields:
            return m.group(0)
        return f'{m.group("key")}="{scrub_text(m.group("value"), name, alias)}"'

    return head + sep + _FIELD_RE.sub(one, rest)


def mentions(value: Any, name: str) -> bool:
    if isinstance(value, str):
        return name_pattern(name).search(value) is not None
    if isinstance(value, list | tuple):
        return any(mentions(v, name) for v in value)
    if isinstance(value, dict):
        return any(mentions(k, name) or mentions(v, name) for k, v in value.items())
    return False

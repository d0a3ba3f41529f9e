"""Erasing a person's name from stored values. Pure.

A name is replaced where it stands as a whole word (names are
``[A-Za-z0-9_-]``, so "ana" in "banana" or "ana-2" is left alone), in plain
strings and anywhere inside JSON values (keys included).
"""

from __future__ import annotations

import re
from typing import Any


def name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9_-]){re.escape(name)}(?![A-Za-z0-9_-])")


def scrub_text(text: str, name: str, alias: str) -> str:
    return name_pattern(name).sub(alias, text)


def scrub_value(value: Any, name: str, alias: str) -> Any:
    """``value`` with every whole-word ``name`` replaced by ``alias``, recursively."""
    if isinstance(value, str):
        return scrub_text(value, name, alias)
    if isinstance(value, list | tuple):
        return [scrub_value(v, name, alias) for v in value]
    if isinstance(value, dict):
        return {scrub_text(k, name, alias): scrub_value(v, name, alias) for k, v in value.items()}
    return value


def mentions(value: Any, name: str) -> bool:
    if isinstance(value, str):
        return name_pattern(name).search(value) is not None
    if isinstance(value, list | tuple):
        return any(mentions(v, name) for v in value)
    if isinstance(value, dict):
        return any(mentions(k, name) or mentions(v, name) for k, v in value.items())
    return False

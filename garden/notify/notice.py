"""What is said (:class:`Notice`) and to whom (:class:`Recipient`): frozen values, checked when made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from garden.alerting.lifecycle import SEVERITY_ORDER
from garden.notify.quiet_hours import QuietHours

TRANSITIONS = frozenset({"raised", "repeated", "escalated", "resolved"})
SEVERITIES = frozenset(SEVERITY_ORDER)


@dataclass(frozen=True, slots=True)
class Recipient:
    """A volunteer and the addresses each channel needs; a channel skips a recipient without its address.

    ``timezone`` is an IANA name (``Europe/Berlin``) and is how ``quiet_hours`` are read.
    ``urgent_overrides_quiet`` lets critical notices through quiet hours.
    The repr hides the ntfy topic and the webhook URL: either is a secret (anyone who
    knows an ntfy topic can read it; webhook URLs often carry a token).
    """

    name: str
    email: str | None
    ntfy_topic: str | None
    webhook_url: str | None
    quiet_hours: QuietHours | None
    timezone: str = "UTC"
    urgent_overrides_quiet: bool = True

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"recipient {self.name!r}: unknown time zone {self.timezone!r}; use an IANA name like Europe/Berlin"
            ) from None

    def __repr__(self) -> str:
        return (
            f"Recipient(name={self.name!r}, email={self.email!r}, "
            f"ntfy_topic={'<set>' if self.ntfy_topic else None}, "
            f"webhook_url={'<set>' if self.webhook_url else None}, "
            f"quiet_hours={self.quiet_hours}, timezone={self.timezone!r}, "
            f"urgent_overrides_quiet={self.urgent_overrides_quiet})"
        )


@dataclass(frozen=True, slots=True)
class Notice:
    """One change of one alert, as people are told about it.

    ``key`` names the alert (``water/bed-3``); ``data`` holds JSON-able details for
    the webhook and is copied into a read-only mapping.
    """

    key: str
    transition: str  # raised | repeated | escalated | resolved
    severity: str  # info | warning | critical
    title: str
    body: str
    data: Mapping[str, Any] = field(hash=False)
    created_ms: int

    def __post_init__(self) -> None:
        if self.transition not in TRANSITIONS:
            raise ValueError(f"notice {self.key}: transition {self.transition!r} is not one of {sorted(TRANSITIONS)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"notice {self.key}: severity {self.severity!r} is not one of {sorted(SEVERITIES)}")
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))

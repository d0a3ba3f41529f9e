"""An alert's life: raised, repeated at a bounded rate, escalated, resolved. Pure.

A rule reports a :class:`Condition` for a (kind, subject) each time it is
evaluated: active or not, how severe, and the words for people. :func:`step`
turns the alert's current record and that condition into the next record and,
when something changed that people or dashboards should see, a transition:

- **raised** when an active condition has no open alert;
- **repeated** every ``repeat_every_ms`` while it stays active, at most
  ``max_repeats`` times, unless someone acknowledged it;
- **escalated** once, when still open and unacknowledged ``escalate_after_ms``
  after it was raised, or at once when its severity rises;
- **resolved** when the condition is no longer active (or a watering closed it).

Acknowledging stops repeats and escalation; muting keeps every transition on
MQTT and in InfluxDB but tells nobody until the mute ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}
# Every change an alert can go through, as published and stored.
ALERT_CHANGES = ("raised", "repeated", "escalated", "resolved", "acked", "muted")


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    repeat_every_ms: int = 6 * 3_600_000
    max_repeats: int = 3
    escalate_after_ms: int = 12 * 3_600_000


@dataclass(frozen=True, slots=True)
class Condition:
    kind: str
    subject: str
    active: bool
    severity: str = "warning"
    text: str = ""
    bed: str | None = None
    node: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.subject}"


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    subject: str
    severity: str
    text: str
    raised_ms: int
    updated_ms: int
    notified_ms: int
    bed: str | None = None
    node: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    repeats: int = 0
    escalated: bool = False
    acked_by: str | None = None
    acked_ms: int | None = None
    resolved_ms: int | None = None
    resolution: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.subject}"

    @property
    def open(self) -> bool:
        return self.resolved_ms is None

    @property
    def state(self) -> str:
        if not self.open:
            return "resolved"
        if self.acked_by:
            return "acked"
        return "escalated" if self.escalated else "raised"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "subject": self.subject,
            "state": self.state,
            "severity": self.severity,
            "text": self.text,
            "bed": self.bed,
            "node": self.node,
            "details": dict(self.details),
            "raised_ms": self.raised_ms,
            "updated_ms": self.updated_ms,
            "notified_ms": self.notified_ms,
            "repeats": self.repeats,
            "escalated": self.escalated,
            "acked_by": self.acked_by,
            "acked_ms": self.acked_ms,
            "resolved_ms": self.resolved_ms,
            "resolution": self.resolution,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Alert:
        return cls(
            kind=str(obj["kind"]),
            subject=str(obj["subject"]),
            severity=str(obj["severity"]),
            text=str(obj.get("text", "")),
            raised_ms=int(obj["raised_ms"]),
            updated_ms=int(obj["updated_ms"]),
            notified_ms=int(obj.get("notified_ms", obj["raised_ms"])),
            bed=obj.get("bed"),
            node=obj.get("node"),
            details=dict(obj.get("details") or {}),
            repeats=int(obj.get("repeats", 0)),
            escalated=bool(obj.get("escalated", False)),
            acked_by=obj.get("acked_by"),
            acked_ms=obj.get("acked_ms"),
            resolved_ms=obj.get("resolved_ms"),
            resolution=str(obj.get("resolution", "")),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """What happened to an alert: ``change`` is raised/repeated/escalated/resolved/acked/muted."""

    change: str
    alert: Alert
    ts_ms: int
    by: str | None = None

    @property
    def notify(self) -> bool:
        """Whether people hear of it (muting is decided by the caller)."""
        return self.change in ("raised", "repeated", "escalated", "resolved")


def step(
    current: Alert | None,
    condition: Condition,
    now_ms: int,
    policy: AlertPolicy = AlertPolicy(),
) -> tuple[Alert | None, Transition | None]:
    """The alert after ``condition`` is seen at ``now_ms``, and the transition, if any."""
    open_alert = current if current is not None and current.open else None
    if not condition.active:
        if open_alert is None:
            return current, None
        closed = replace(open_alert, resolved_ms=now_ms, updated_ms=now_ms, resolution=condition.text or "cleared")
        return closed, Transition("resolved", closed, now_ms)
    if open_alert is None:
        raised = Alert(
            kind=condition.kind,
            subject=condition.subject,
            severity=condition.severity,
            text=condition.text,
            raised_ms=now_ms,
            updated_ms=now_ms,
            notified_ms=now_ms,
            bed=condition.bed,
            node=condition.node,
            details=condition.details,
        )
        return raised, Transition("raised", raised, now_ms)
    fresh = replace(open_alert, text=condition.text, details=condition.details, bed=condition.bed, node=condition.node)
    rose = SEVERITY_ORDER.get(condition.severity, 1) > SEVERITY_ORDER.get(open_alert.severity, 1)
    if rose:
        up = replace(fresh, severity=condition.severity, escalated=True, updated_ms=now_ms, notified_ms=now_ms)
        return up, Transition("escalated", up, now_ms)
    if open_alert.acked_by is None:
        if not open_alert.escalated and now_ms - open_alert.raised_ms >= policy.escalate_after_ms:
            up = replace(fresh, escalated=True, updated_ms=now_ms, notified_ms=now_ms)
            return up, Transition("escalated", up, now_ms)
        if open_alert.repeats < policy.max_repeats and now_ms - open_alert.notified_ms >= policy.repeat_every_ms:
            again = replace(fresh, repeats=open_alert.repeats + 1, updated_ms=now_ms, notified_ms=now_ms)
            return again, Transition("repeated", again, now_ms)
    return fresh, None


def close(current: Alert, now_ms: int, resolution: str) -> tuple[Alert, Transition]:
    """Resolve an open alert for a reason found outside its rule (a watering was detected)."""
    closed = replace(current, resolved_ms=now_ms, updated_ms=now_ms, resolution=resolution)
    return closed, Transition("resolved", closed, now_ms)


def acknowledge(current: Alert, who: str, now_ms: int) -> tuple[Alert, Transition]:
    acked = replace(current, acked_by=who, acked_ms=now_ms, updated_ms=now_ms)
    return acked, Transition("acked", acked, now_ms, by=who)

"""Who hears of an alert. Pure.

People subscribe in config (``[[people]]``) to beds (or ``"*"``, the whole
garden) and to kinds of alert (or ``"*"``). An alert about a bed goes to those
subscribed to that bed; one about a node with no bed, to those subscribed to
the whole garden. When the garden keeps a watering rota, a bed's alert goes
first to the volunteers on duty among them, and to everyone subscribed once
it is escalated (``on_duty`` is None when there is no rota: then everyone
subscribed hears from the start).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from garden.alerting.lifecycle import Alert
from garden.notify.notice import Recipient


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    recipient: Recipient
    beds: tuple[str, ...] = ("*",)
    kinds: tuple[str, ...] = ("*",)

    def subscribed(self, alert: Alert) -> bool:
        if "*" not in self.kinds and alert.kind not in self.kinds:
            return False
        return "*" in self.beds or (alert.bed is not None and alert.bed in self.beds)


def recipients_for(
    alert: Alert, people: Sequence[Person], *, escalated: bool, on_duty: Collection[str] | None = None
) -> list[Recipient]:
    subscribed = [p for p in people if p.subscribed(alert)]
    if on_duty is not None and not escalated and alert.bed is not None:
        duty = [p for p in subscribed if p.name in on_duty]
        if duty:
            subscribed = duty
    return [p.recipient for p in subscribed]

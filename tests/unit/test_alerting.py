"""The pure alert core: need hysteresis, alert lifecycle, node rules, routing, wording."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garden.alerting import rules
from garden.alerting.lifecycle import AlertPolicy, Condition, acknowledge, close, step
from garden.alerting.routing import Person, recipients_for
from garden.alerting.wording import water_text, when_text
from garden.notify.notice import Recipient
from garden.watering.drydown import Forecast
from garden.watering.need import Need, NeedPolicy, next_need, smoothed

H = 3_600_000
MIN = 60_000
T0 = 1_780_000_000_000


# ------------------------------------------------------------ need states


def run_need(values: list[float], trigger: float = 22.0, critical: float = 17.0) -> list[Need]:
    state, out, seen = Need.UNKNOWN, [], []
    for v in values:
        seen.append(v)
        state = next_need(state, smoothed(seen, 3), trigger_vwc=trigger, critical_vwc=critical, hours_to_trigger=None)
        out.append(state)
    return out


def entries(states: list[Need], into: set[Need]) -> int:
    """How many times the sequence enters ``into`` from outside it."""
    count, inside = 0, False
    for s in states:
        if s in into and not inside:
            count += 1
        inside = s in into
    return count


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("kind", ["uniform", "gauss"])
def test_noise_around_the_trigger_raises_once_per_crossing(seed: int, kind: str) -> None:
    """±1.5 % VWC of noise on a bed sitting at its trigger for days: one entry into 'needs water'."""
    rng = random.Random(seed)

    def noise() -> float:
        return rng.uniform(-1.5, 1.5) if kind == "uniform" else max(-1.5, min(1.5, rng.gauss(0, 0.75)))

    # Dries from 26 % to the trigger (22 %), sits on it for 300 readings, is watered to 30 %,
    # dries down again through the trigger and sits on it again.
    truth = [26 - 4 * i / 100 for i in range(100)] + [22.0] * 300 + [30.0] * 20
    truth += [30 - 8 * i / 100 for i in range(100)] + [22.0] * 300
    states = run_need([v + noise() for v in truth])
    assert entries(states, {Need.NEEDS_WATER, Need.CRITICAL}) == 2


def test_states_follow_the_lines_and_the_forecast() -> None:
    policy = NeedPolicy()
    assert next_need(Need.OK, 30.0, trigger_vwc=22, critical_vwc=17, hours_to_trigger=100) is Need.OK
    assert next_need(Need.OK, 30.0, trigger_vwc=22, critical_vwc=17, hours_to_trigger=10) is Need.SOON
    assert next_need(Need.SOON, 30.0, trigger_vwc=22, critical_vwc=17, hours_to_trigger=30) is Need.SOON
    assert next_need(Need.SOON, 30.0, trigger_vwc=22, critical_vwc=17, hours_to_trigger=40) is Need.OK
    assert next_need(Need.OK, 21.9, trigger_vwc=22, critical_vwc=17, hours_to_trigger=None) is Need.NEEDS_WATER
    assert next_need(Need.NEEDS_WATER, 24.9, trigger_vwc=22, critical_vwc=17, hours_to_trigger=None) is Need.NEEDS_WATER
    assert next_need(Need.NEEDS_WATER, 25.1, trigger_vwc=22, critical_vwc=17, hours_to_trigger=None) is Need.OK
    assert next_need(Need.NEEDS_WATER, 16.0, trigger_vwc=22, critical_vwc=17, hours_to_trigger=None) is Need.CRITICAL
    assert next_need(Need.CRITICAL, 19.5, trigger_vwc=22, critical_vwc=17, hours_to_trigger=None) is Need.CRITICAL
    assert next_need(Need.CRITICAL, 20.5, trigger_vwc=22, critical_vwc=17, hours_to_trigger=None) is Need.NEEDS_WATER
    assert next_need(Need.OK, None, trigger_vwc=22, critical_vwc=17, hours_to_trigger=None) is Need.UNKNOWN
    assert policy.hysteresis_vwc >= 3.0  # the full swing of the ±1.5 % noise the issue names


# -------------------------------------------------------------- lifecycle


def cond(active: bool, severity: str = "warning", text: str = "dry") -> Condition:
    return Condition("water", "bed-3", active, severity, text, bed="bed-3")


def test_lifecycle_raise_repeat_escalate_resolve() -> None:
    policy = AlertPolicy(repeat_every_ms=6 * H, max_repeats=2, escalate_after_ms=12 * H)
    alert, tr = step(None, cond(True), T0, policy)
    assert tr is not None and tr.change == "raised" and alert is not None and alert.open
    changes = []
    for hour in range(1, 40):
        alert, tr = step(alert, cond(True), T0 + hour * H, policy)
        if tr is not None:
            changes.append((hour, tr.change))
    # A repeat at 6 h, escalation at 12 h, a last repeat at 18 h, then max_repeats holds.
    assert changes == [(6, "repeated"), (12, "escalated"), (18, "repeated")]
    assert alert is not None
    closed, tr = step(alert, cond(False, text="watered"), T0 + 40 * H, policy)
    assert tr is not None and tr.change == "resolved" and closed is not None and not closed.open
    _again, tr = step(closed, cond(False), T0 + 41 * H, policy)
    assert tr is None
    raised, tr = step(closed, cond(True), T0 + 42 * H, policy)
    assert tr is not None and tr.change == "raised" and raised is not None and raised.raised_ms == T0 + 42 * H


def test_severity_rise_escalates_at_once_and_ack_stops_repeats() -> None:
    alert, _ = step(None, cond(True), T0)
    assert alert is not None
    up, tr = step(alert, cond(True, "critical"), T0 + MIN)
    assert tr is not None and tr.change == "escalated" and up is not None and up.severity == "critical"
    acked, tr = acknowledge(up, "ana", T0 + 2 * MIN)
    assert tr.change == "acked" and not tr.notify and acked.acked_by == "ana"
    for hour in range(1, 50):
        _acked2, tr2 = step(acked, cond(True, "critical"), T0 + hour * H)
        assert tr2 is None
    closed, tr = close(acked, T0 + 50 * H, "watered")
    assert tr.change == "resolved" and closed.resolution == "watered"


# ----------------------------------------------------------------- rules


def test_a_sleeping_node_is_never_lost_and_a_stopped_one_is_lost_in_time() -> None:
    policy = rules.RulePolicy()
    interval = 15 * 60
    # Reads every 15 min and sleeps in between: checked every minute for a day, never late or lost.
    last = T0
    for minute in range(0, 24 * 60):
        now = T0 + minute * MIN
        if minute % 15 == 0:
            last = now
        assert rules.liveness(last, interval, now, policy) is rules.Liveness.OK
    # Asleep for 10 minutes since its last reading: fine.
    assert rules.liveness(T0, interval, T0 + 10 * MIN, policy) is rules.Liveness.OK
    # Stops: late after interval × late_tolerance, lost within interval × lost_tolerance.
    assert rules.liveness(T0, interval, T0 + int(interval * policy.late_tolerance * 1000) + MIN, policy) == "late"
    assert rules.liveness(T0, interval, T0 + int(interval * policy.lost_tolerance * 1000) + 1, policy) == "lost"


def test_gaps_stuck_faults_battery_tank() -> None:
    assert rules.missing_readings([(1, 1), (1, 2), (1, 5), (2, 1), (2, 3)]) == 3
    assert rules.missing_readings([(1, s) for s in range(10)]) == 0
    assert rules.stuck_sensors({"sm0": [400.0] * 12, "st0": [18.0, 18.1] * 6, "lx0": [0.0] * 50}, 12) == ["sm0"]
    assert rules.stuck_sensors({"sm0": [400.0] * 11}, 12) == []
    faults = rules.faulty_sensors({"st0": ["sentinel"] * 3, "sm0": [None, "nc", "nc"]}, {"sm0": [70.0] * 3}, 3)
    assert faults == {"sm0": "impossible_vwc", "st0": "sentinel"}
    assert rules.battery_state([3.9, 3.3, 3.3]) == "warning"
    assert rules.battery_state([3.1, 3.1, 3.9]) == "critical"
    assert rules.battery_state([3.9, 3.1, 3.9]) is None  # one bad reading is not believed
    # A tank using 40 l a day, with a litre of wobble, holding 100 l: 2.5 days left.
    rng = random.Random(1)
    samples = [(T0 + i * H, 220 - 40 * i / 24 + rng.uniform(-0.5, 0.5)) for i in range(72)]
    days = rules.tank_days_left(samples, T0 + 71 * H)
    assert days is not None and 2.0 < days < 3.0
    assert rules.tank_days_left([(T0 + i * H, 500.0) for i in range(72)], T0 + 71 * H) is None


@settings(max_examples=200)
@given(st.integers(1, 86_400), st.integers(0, 10 * 86_400_000))
def test_liveness_never_flags_within_one_interval(interval: int, silent_ms: int) -> None:
    state = rules.liveness(T0, interval, T0 + min(silent_ms, interval * 1000), rules.RulePolicy())
    assert state is rules.Liveness.OK


# ------------------------------------------------------- routing, wording


def person(name: str, beds: tuple[str, ...] = ("*",), kinds: tuple[str, ...] = ("*",)) -> Person:
    return Person(name, Recipient(name, f"{name}@example.org", None, None, None), beds, kinds)


def test_routing_by_bed_kind_and_rota() -> None:
    alert, _ = step(None, cond(True), T0)
    assert alert is not None
    people = [person("ana", ("bed-3",)), person("ben", ("bed-1",)), person("cy"), person("di", kinds=("node",))]
    assert [r.name for r in recipients_for(alert, people, escalated=False)] == ["ana", "cy"]
    assert [r.name for r in recipients_for(alert, people, escalated=False, on_duty={"cy"})] == ["cy"]
    assert [r.name for r in recipients_for(alert, people, escalated=True, on_duty={"cy"})] == ["ana", "cy"]


def test_water_message_says_what_where_how_sure_and_what_to_do() -> None:
    forecast = Forecast("exponential", 14.2, 10.1, 19.8, 0.01, 40, 30.0, 0.4)
    tuesday_ms = 1_794_873_600_000  # 2026-11-17, a Tuesday, 00:00 UTC
    text = water_text(bed="bed-3", crops=["tomato"], state="needs_water", vwc=19.2, trigger_vwc=22.0,
                      critical_vwc=17.0, to_critical=forecast, last_watering=(tuesday_ms + 9 * H, "Ana"),
                      now_ms=tuesday_ms + 3 * 24 * H, tz="UTC")  # fmt: skip
    assert text.startswith("Bed 3 tomato: 19% VWC, trigger 22%. Water within ~14 h (10–20 h).")
    assert text.endswith("Last watered Tuesday by Ana.")
    assert when_text(tuesday_ms + H, tuesday_ms + 2 * H, "UTC") == "today 01:00"

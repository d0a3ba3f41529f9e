"""The commons' pure rules: quantities, the rota, sharing a harvest, erasing a name, and ``[commons]``."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.errors import ConfigError
from garden.commons.quantity import MAX_GRAMS, MAX_PIECES, Quantity, format_amount, parse_quantity
from garden.commons.rota import WEEKDAYS, Rota, Swap, check_swap, on_duty, week
from garden.commons.scrub import PERSON_KEYS, mentions, scrub_line, scrub_text, scrub_value
from garden.commons.settings import HOUR_MS, CommonsSettings, parse_commons
from garden.commons.shares import Ask, by_weight, first_come

# ------------------------------------------------------------------ quantities


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [
        ("5kg", 5000, "g"),
        ("500 g", 500, "g"),
        ("1,5 kg", 1500, "g"),
        ("1.5 kg", 1500, "g"),
        ("0.25kg", 250, "g"),
        (" 2KG ", 2000, "g"),
        ("12", 12, "pcs"),
        ("12 pcs", 12, "pcs"),
        ("1 pc", 1, "pcs"),
        ("3 x", 3, "pcs"),
        ("2 bunches", 2, "pcs"),
        (f"{MAX_GRAMS} g", MAX_GRAMS, "g"),
        ("10000kg", MAX_GRAMS, "g"),
        (str(MAX_PIECES), MAX_PIECES, "pcs"),
    ],
)
def test_parse_quantity(text: str, amount: int, unit: str) -> None:
    assert parse_quantity(text) == Quantity(amount, unit)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not a quantity"),
        ("abc", "not a quantity"),
        ("kg", "not a quantity"),
        ("5 lbs", "not a quantity"),
        ("-5kg", "not a quantity"),
        ("5kg 3", "not a quantity"),
        ("0g", "1 g to"),
        ("0.4 g", "1 g to"),
        ("0 kg", "1 g to"),
        ("0", "pieces"),
        ("1.5", "whole numbers"),
        ("2,5 pcs", "whole numbers"),
        ("20000 kg", "1 g to 10000 kg"),
        (f"{MAX_GRAMS + 1}g", "1 g to"),
        (str(MAX_PIECES + 1), "pieces"),
    ],
)
def test_parse_quantity_refuses_with_a_message(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_quantity(text)


@pytest.mark.parametrize("text", ["9" * 400 + "g", "9" * 400 + " kg", "9" * 400])
def test_parse_quantity_refuses_a_number_too_large_for_a_float_with_a_value_error(text: str) -> None:
    # BUG: float("9" * 400) is inf; round(inf) / int(inf) raise OverflowError, not the
    # ValueError parse_quantity promises (and the commons service catches).
    with pytest.raises(ValueError, match=r"1 g to|pieces"):
        parse_quantity(text)


@given(st.text(max_size=30))
def test_parse_quantity_gives_a_quantity_in_range_or_a_value_error(text: str) -> None:
    try:
        q = parse_quantity(text)
    except ValueError as err:
        assert str(err)
        return
    assert q.unit in ("g", "pcs")
    assert isinstance(q.amount, int)
    assert 1 <= q.amount <= (MAX_GRAMS if q.unit == "g" else MAX_PIECES)


@pytest.mark.parametrize(
    ("amount", "unit", "text"),
    [(500, "g", "500 g"), (999, "g", "999 g"), (1000, "g", "1 kg"), (1500, "g", "1.5 kg"), (1250, "g", "1.25 kg"),
     (5000, "g", "5 kg"), (1, "pcs", "1 pc"), (12, "pcs", "12 pcs"), (0, "pcs", "0 pcs"), (0, "g", "0 g")],
)  # fmt: skip
def test_format_amount(amount: int, unit: str, text: str) -> None:
    assert format_amount(amount, unit) == text


def test_quantity_text_and_json() -> None:
    q = parse_quantity("2,5kg")
    assert str(q) == "2.5 kg"
    assert q.to_json() == {"amount": 2500, "unit": "g", "text": "2.5 kg"}


@given(st.integers(1, 999_999))
def test_grams_round_trip_through_their_text(grams: int) -> None:
    assert parse_quantity(format_amount(grams, "g")) == Quantity(grams, "g")


@given(st.integers(1, MAX_PIECES))
def test_pieces_round_trip_through_their_text(pieces: int) -> None:
    assert parse_quantity(format_amount(pieces, "pcs")) == Quantity(pieces, "pcs")
    assert parse_quantity(str(Quantity(pieces, "pcs"))) == Quantity(pieces, "pcs")


@given(st.integers(1, MAX_GRAMS // 1000))
def test_whole_kilograms_round_trip_through_their_text(kg: int) -> None:
    assert parse_quantity(format_amount(kg * 1000, "g")) == Quantity(kg * 1000, "g")


# ------------------------------------------------------------------ the rota

MON = dt.date(2026, 6, 1)
TUE, WED = MON + dt.timedelta(days=1), MON + dt.timedelta(days=2)
ROTA = Rota({"monday": ("ana", "ben"), "wednesday": ("cy",)})


def test_weekdays_are_in_python_order() -> None:
    assert MON.weekday() == 0 and WEEKDAYS[MON.weekday()] == "monday"


def test_on_duty_follows_the_weekly_rota() -> None:
    assert on_duty(ROTA, [], MON) == ("ana", "ben")
    assert on_duty(ROTA, [], TUE) == ()
    assert on_duty(ROTA, [], WED) == ("cy",)
    assert on_duty(ROTA, [], MON + dt.timedelta(days=7)) == ("ana", "ben")
    assert ROTA.names() == {"ana", "ben", "cy"}
    assert not ROTA.empty and Rota({}).empty and Rota({"monday": ()}).empty


def test_a_swap_hands_one_duty_on_one_day() -> None:
    swaps = [Swap(MON, "ana", "dan")]
    assert on_duty(ROTA, swaps, MON) == ("dan", "ben")
    assert on_duty(ROTA, swaps, MON + dt.timedelta(days=7)) == ("ana", "ben")  # only that date
    assert on_duty(ROTA, swaps, WED) == ("cy",)


def test_swaps_are_applied_in_the_order_they_were_made() -> None:
    # ana hands Monday to dan, then dan hands it on to eve.
    assert on_duty(ROTA, [Swap(MON, "ana", "dan"), Swap(MON, "dan", "eve")], MON) == ("eve", "ben")
    # The other way round, dan was not on duty when he "gave" it: that swap does nothing.
    assert on_duty(ROTA, [Swap(MON, "dan", "eve"), Swap(MON, "ana", "dan")], MON) == ("dan", "ben")


def test_a_swap_from_someone_not_on_duty_changes_nothing() -> None:
    assert on_duty(ROTA, [Swap(MON, "cy", "dan")], MON) == ("ana", "ben")


def test_a_taker_already_on_duty_is_counted_once() -> None:
    assert on_duty(ROTA, [Swap(MON, "ana", "ben")], MON) == ("ben",)


def test_week() -> None:
    days = week(ROTA, [Swap(WED, "cy", "ana")], MON)
    assert [d for d, _ in days] == [MON + dt.timedelta(days=i) for i in range(7)]
    assert days[0] == (MON, ("ana", "ben")) and days[1] == (TUE, ()) and days[2] == (WED, ("ana",))
    assert len(week(ROTA, [], TUE, days=15)) == 15
    assert week(ROTA, [], TUE, days=15)[-1] == (TUE + dt.timedelta(days=14), ())


def test_check_swap() -> None:
    assert check_swap(ROTA, [], Swap(MON, "ana", "dan")) is None
    assert check_swap(ROTA, [], Swap(MON, "ana", "ana")) == "a swap needs two people"
    assert check_swap(ROTA, [], Swap(TUE, "ana", "ben")) == "ana is not on duty on Tue 02 Jun (on duty: nobody)"
    assert check_swap(ROTA, [], Swap(WED, "ana", "ben")) == "ana is not on duty on Wed 03 Jun (on duty: cy)"
    # Once ana has handed Monday to dan, she cannot hand it again; dan can.
    made = [Swap(MON, "ana", "dan")]
    assert check_swap(ROTA, made, Swap(MON, "ana", "eve")) == "ana is not on duty on Mon 01 Jun (on duty: dan, ben)"
    assert check_swap(ROTA, made, Swap(MON, "dan", "eve")) is None


names = st.sampled_from(["ana", "ben", "cy", "dan", "eve"])


@given(
    st.dictionaries(st.sampled_from(WEEKDAYS), st.lists(names, max_size=3, unique=True).map(tuple)),
    st.lists(st.tuples(st.integers(0, 6), names, names), max_size=8),
    st.integers(0, 6),
)
def test_on_duty_invariants(weekly: dict[str, tuple[str, ...]], raw: list[tuple[int, str, str]], offset: int) -> None:
    rota = Rota(weekly)
    swaps = [Swap(MON + dt.timedelta(days=d), g, t) for d, g, t in raw]
    day = MON + dt.timedelta(days=offset)
    duty = on_duty(rota, swaps, day)
    planned = weekly.get(WEEKDAYS[offset], ())
    assert len(duty) == len(set(duty)) <= len(planned)
    assert set(duty) <= set(planned) | {s.taker for s in swaps if s.day == day}
    if not any(s.day == day for s in swaps):
        assert duty == planned


# ------------------------------------------------------------------ shares


def test_first_come() -> None:
    assert first_come(1000, 300) == 300
    assert first_come(200, 300) == 200
    assert first_come(0, 300) == 0
    assert first_come(-5, 300) == 0


def test_by_weight_examples() -> None:
    a, b, c = (Ask(x, x, 10) for x in "abc")
    assert by_weight(20, [a, b]) == {"a": 10, "b": 10}  # enough for all
    assert by_weight(10, [a, b]) == {"a": 5, "b": 5}
    assert by_weight(0, [a, b]) == {"a": 0, "b": 0}
    assert by_weight(-3, [a, b]) == {"a": 0, "b": 0}
    assert by_weight(10, []) == {}
    # Rounding leaves one unit: the earlier claim gets it.
    assert by_weight(10, [a, b, c]) == {"a": 4, "b": 3, "c": 3}
    # Proportional to weight (3 : 1) ...
    assert by_weight(8, [Ask("a", "ana", 8, 3.0), Ask("b", "ben", 8, 1.0)]) == {"a": 6, "b": 2}
    # ... but never more than asked: what a small ask leaves goes to the others.
    assert by_weight(50, [Ask("a", "ana", 1, 1.0), Ask("b", "ben", 100, 1.0)]) == {"a": 1, "b": 49}
    assert by_weight(100, [Ask("a", "ana", 10, 9.0), Ask("b", "ben", 200, 1.0)]) == {"a": 10, "b": 90}


def test_by_weight_a_zero_weight_never_hands_out_more_than_available() -> None:
    # BUG: a weight of 0 counts as 1 in its own part but 0 in the total weight, so the
    # parts add up to more than is available: here 10 + 10 of 10.
    granted = by_weight(10, [Ask("a", "ana", 10, 0.0), Ask("b", "ben", 10, 1.0)])
    assert sum(granted.values()) <= 10


weights = st.floats(1.0, 60.0, allow_nan=False)
asks_st = st.lists(st.tuples(st.integers(0, 5000), weights), max_size=12).map(
    lambda xs: [Ask(f"c{i}", f"p{i % 4}", amount, weight) for i, (amount, weight) in enumerate(xs)]
)


@given(st.integers(-10, 20_000), asks_st)
def test_by_weight_invariants(available: int, asks: list[Ask]) -> None:
    granted = by_weight(available, asks)
    assert set(granted) == {a.claim for a in asks}
    assert all(type(g) is int for g in granted.values())
    assert sum(granted.values()) <= max(available, 0)
    for a in asks:
        assert 0 <= granted[a.claim] <= a.amount
    wanted = sum(a.amount for a in asks)
    if available >= 0 and wanted <= available:
        assert granted == {a.claim: a.amount for a in asks}
    if available > 0 and wanted > available:  # oversubscribed: all of it is handed out
        assert sum(granted.values()) == available


@given(st.integers(1, 20_000), asks_st, st.integers(1, 5000), weights, weights)
def test_by_weight_a_larger_weight_never_gets_less_for_the_same_ask(
    available: int, others: list[Ask], amount: int, w1: float, w2: float
) -> None:
    small, big = sorted((w1, w2))
    if small == big:
        big = small + 0.5
    # Both orders: the tie-break by claim order must not let the smaller weight win.
    for pair in ([Ask("small", "s", amount, small), Ask("big", "b", amount, big)],
                 [Ask("big", "b", amount, big), Ask("small", "s", amount, small)]):  # fmt: skip
        granted = by_weight(available, [*others, *pair])
        assert granted["big"] >= granted["small"], granted


@given(st.integers(1, 20_000), st.lists(st.integers(1, 5000), min_size=1, max_size=12))
def test_by_weight_equal_weights_split_evenly(available: int, amounts: list[int]) -> None:
    asks = [Ask(f"c{i}", f"p{i}", amount) for i, amount in enumerate(amounts)]
    granted = by_weight(available, asks)
    # Two equal claims that both fall short differ by at most the one unit of rounding.
    short = [granted[a.claim] for a in asks if granted[a.claim] < a.amount]
    assert not short or max(short) - min(short) <= 1
    # Nobody who got less than they asked got less than someone else could have shared.
    for a in asks:
        if granted[a.claim] < a.amount:
            assert all(granted[a.claim] + 1 >= granted[b.claim] for b in asks if b.amount >= a.amount)


# ------------------------------------------------------------------ scrub


def test_scrub_replaces_whole_words_only() -> None:
    text = "ana's claim; banana; ana-2; x-ana; ana_b; (ana), ana. ana"
    assert scrub_text(text, "ana", "erased-1") == (
        "erased-1's claim; banana; ana-2; x-ana; ana_b; (erased-1), erased-1. erased-1"
    )
    assert scrub_text("banana and ana-2", "ana", "erased-1") == "banana and ana-2"
    assert scrub_text("rota: ben, ana", "ana", "erased-1") == "rota: ben, erased-1"


def test_scrub_a_name_with_a_dash() -> None:
    assert scrub_text("ana-b, ana-bc, xana-b, ana-b's", "ana-b", "e") == "e, ana-bc, xana-b, e's"


def test_scrub_value_rewrites_only_what_holds_people() -> None:
    """Values under the keys that hold people or their words; never a key, a crop or a bed."""
    value: dict[str, Any] = {
        "who": "basil",
        "crop": "basil",
        "basil": {"list": ["basil's"], "n": 1.5},
        "days": [{"date": "2026-06-01", "on_duty": ["basil", "ben"]}],
        "text": "claimed by basil-2, then basil",
    }
    assert mentions(value, "basil")
    scrubbed = scrub_value(value, "basil", "erased-1")
    assert scrubbed == {
        "who": "erased-1",
        "crop": "basil",
        "basil": {"list": ["basil's"], "n": 1.5},
        "days": [{"date": "2026-06-01", "on_duty": ["erased-1", "ben"]}],
        "text": "claimed by basil-2, then erased-1",
    }
    assert value["who"] == "basil"  # the original is left as it was


def test_scrub_line_rewrites_string_fields_not_tags() -> None:
    line = 'harvest,bed=bed-1,crop=basil,garden=t who="basil",text="basil: 1 kg",kg=1.0,unit="kg" 1795000000000'
    assert scrub_line(line, "basil", "erased-1", ("who", "text")) == (
        'harvest,bed=bed-1,crop=basil,garden=t who="erased-1",text="erased-1: 1 kg",kg=1.0,unit="kg" 1795000000000'
    )
    escaped = r'event,garden=my\ garden,type=claim text="say \"ana\" twice: ana",who="ana" 1'
    assert scrub_line(escaped, "ana", "e", ("who", "text")) == (
        r'event,garden=my\ garden,type=claim text="say \"e\" twice: e",who="e" 1'
    )


def test_mentions() -> None:
    assert mentions("ana", "ana") and mentions(["x", {"y": "hi ana"}], "ana") and mentions({"ana": 1}, "ana")
    assert not mentions("banana, ana-2, ana_x", "ana")
    assert not mentions({"who": "ben", "n": 3, "list": [None, 1.0]}, "ana")
    assert not mentions(42, "ana") and not mentions(None, "ana")


person = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)


def strings_under_person_keys(value: Any, inside: bool = False) -> list[str]:
    if isinstance(value, str):
        return [value] if inside else []
    if isinstance(value, list | tuple):
        return [s for v in value for s in strings_under_person_keys(v, inside)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings_under_person_keys(v, inside or k in PERSON_KEYS)]
    return []


@given(st.recursive(
    st.none() | st.integers() | st.booleans() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["who", "text", "crop", "bed", "x"]) | st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
), person)  # fmt: skip
def test_after_scrubbing_no_person_field_holds_the_name(value: Any, name: str) -> None:
    alias = "erased-abc123"
    if name == alias:
        return
    scrubbed = scrub_value(value, name, alias)
    assert not any(mentions(s, name) for s in strings_under_person_keys(scrubbed))
    # and everything else is as it was
    untouched = scrub_value(value, name, alias, keys=())
    assert untouched == scrub_value(value, "", "", keys=())
    if not mentions(value, name):
        assert scrubbed == untouched


@given(st.text(max_size=40), person)
def test_scrub_text_changes_nothing_that_does_not_mention_the_name(text: str, name: str) -> None:
    if not mentions(text, name):
        assert scrub_text(text, name, "erased-1") == text


# ------------------------------------------------------------------ [commons]


def test_commons_defaults() -> None:
    assert parse_commons({}) == CommonsSettings()
    s = parse_commons({"commons": {}})
    assert s == CommonsSettings()
    assert s.claim_expires_ms == 3 * HOUR_MS and s.confirm_within_ms == 3 * HOUR_MS
    assert s.share_expires_ms == 48 * HOUR_MS and s.allocate_after_ms == 2 * HOUR_MS
    assert s.share_rule == "first_come" and s.contribution_days == 90 and s.league_table is False
    assert s.rota.empty


def test_commons_hours_become_milliseconds() -> None:
    s = parse_commons({"commons": {"claim_expires_h": 1.5, "confirm_within_h": 2, "share_expires_h": 24,
                                   "allocate_after_h": 0.25, "share_rule": "by_contribution",
                                   "contribution_days": 30, "league_table": True}})  # fmt: skip
    assert s.claim_expires_ms == 5_400_000
    assert s.confirm_within_ms == 7_200_000
    assert s.share_expires_ms == 86_400_000
    assert s.allocate_after_ms == 900_000
    assert (s.share_rule, s.contribution_days, s.league_table) == ("by_contribution", 30, True)


def test_commons_rota() -> None:
    s = parse_commons({"commons": {"rota": {"monday": ["ana", "ben", "ana"], "friday": []}}})
    assert s.rota.weekly == {"monday": ("ana", "ben"), "friday": ()}
    assert s.rota.names() == {"ana", "ben"}


@pytest.mark.parametrize(
    ("commons", "path"),
    [
        ({"share_rule": "lottery"}, "commons.share_rule"),
        ({"share_rule": 3}, "commons.share_rule"),
        ({"rota": {"funday": ["ana"]}}, "commons.rota.funday"),
        ({"rota": {"monday": "ana"}}, "commons.rota.monday"),
        ({"rota": {"monday": ["ana smith"]}}, "commons.rota.monday"),
        ({"rota": {"monday": [3]}}, "commons.rota.monday"),
        ({"claim_expires_h": 0}, "commons.claim_expires_h"),
        ({"claim_expires_h": -1}, "commons.claim_expires_h"),
        ({"claim_expires_h": math.nan}, "commons.claim_expires_h"),
        ({"claim_expires_h": math.inf}, "commons.claim_expires_h"),
        ({"claim_expires_h": "3"}, "commons.claim_expires_h"),
        ({"claim_expires_h": True}, "commons.claim_expires_h"),
        ({"confirm_within_h": 0}, "commons.confirm_within_h"),
        ({"share_expires_h": 24 * 365 + 1}, "commons.share_expires_h"),
        ({"allocate_after_h": -0.5}, "commons.allocate_after_h"),
        ({"contribution_days": 0}, "commons.contribution_days"),
        ({"contribution_days": 3651}, "commons.contribution_days"),
        ({"contribution_days": 1.5}, "commons.contribution_days"),
        ({"league_table": "yes"}, "commons.league_table"),
        ({"colour": "green"}, "commons.colour"),
        ({"claim_expire_h": 3}, "commons.claim_expire_h"),
    ],
)
def test_commons_errors_name_the_key(commons: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_commons({"commons": commons})
    assert err.value.path == path
    assert str(err.value).startswith(f"{path}: ")


def test_commons_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown key.*share_rule"):
        parse_commons({"commons": {"shares": "first_come"}})


def test_commons_must_be_a_table() -> None:
    with pytest.raises(ConfigError) as err:
        parse_commons({"commons": "first_come"})
    assert err.value.path == "commons"

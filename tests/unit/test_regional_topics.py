"""A regional hub's topics: every garden's subscriptions, each message's garden from its topic."""

from __future__ import annotations

import pytest

from firmware_bridge.errors import ConfigError
from firmware_bridge.topics import ANY_GARDEN, Topics
from garden.settings import load_hub_settings


def test_one_garden_locates_only_its_own_topics() -> None:
    t = Topics("north")
    assert t.locate("garden/north/node/bed-1/telemetry") == ("north", "node", "bed-1", "telemetry")
    assert t.locate("garden/south/node/bed-1/telemetry") is None
    assert t.kind_and_name("garden/north/event/watering") == ("event", "watering", "")


def test_any_garden_subscribes_to_all_and_names_the_garden() -> None:
    t = Topics(ANY_GARDEN)
    assert t.all_telemetry == "garden/+/node/+/telemetry"
    assert t.all_events == "garden/+/event/+"
    assert t.locate("garden/south/node/n-3/telemetry") == ("south", "node", "n-3", "telemetry")
    assert t.locate("garden/north/alert/gaps/n-1") == ("north", "alert", "gaps", "n-1")
    # A garden segment that is not a name (a wildcard, an empty one) is never taken.
    for topic in ("garden/+/node/n/telemetry", "garden//node/n/telemetry", "garden/a b/node/n/telemetry"):
        assert t.locate(topic) is None


def test_other_wildcards_are_still_refused_as_garden_ids() -> None:
    for bad in ("#", "a/b", "", "x+"):
        with pytest.raises(ValueError, match="garden id"):
            Topics(bad)


def test_all_gardens_from_config_env_and_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_hub_settings(empty, env={}).all_gardens is False
    on = tmp_path / "regional.toml"
    on.write_text("[garden]\nid = 'city'\n[hub]\nall_gardens = true\n")
    settings = load_hub_settings(on, env={})
    assert (settings.all_gardens, settings.garden) == (True, "city")
    assert load_hub_settings(empty, env={"GARDEN_HUB_ALL_GARDENS": "yes"}).all_gardens is True
    assert load_hub_settings(on, env={"GARDEN_HUB_ALL_GARDENS": "0"}).all_gardens is False  # the environment wins
    with pytest.raises(ConfigError, match="GARDEN_HUB_ALL_GARDENS"):
        load_hub_settings(empty, env={"GARDEN_HUB_ALL_GARDENS": "maybe"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[hub]\nall_gardens = 'yes'\n")
    with pytest.raises(ConfigError, match=r"hub\.all_gardens"):
        load_hub_settings(bad, env={})

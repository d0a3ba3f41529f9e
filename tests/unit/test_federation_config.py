"""The uplink's and the region's config texts, and the errors that name the bad option."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from firmware_bridge.errors import ConfigError
from garden.federation import (
    FORWARDED,
    QueueBound,
    Uplink,
    bridge_config,
    garden_rate,
    parse_address,
    regional_acl,
    regional_listener,
)

UPLINK = Uplink(
    garden="allotment-7",
    host="region.example.org",
    port=8883,
    username="uplink-allotment-7",
    password="s3cretPassw0rd",
    cafile=Path("/etc/garden/region-ca.pem"),
)


def test_the_bridge_forwards_the_gardens_tree_out_only_over_tls() -> None:
    text = bridge_config(UPLINK)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[:2] == ["max_queued_messages 200000", "max_queued_bytes 104857600"]
    assert lines[2] == "connection uplink-allotment-7"
    options = dict(line.split(" ", 1) for line in lines[2:] if not line.startswith("topic "))
    assert options == {
        "connection": "uplink-allotment-7",
        "address": "region.example.org:8883",
        "bridge_protocol_version": "mqttv311",
        "remote_clientid": "uplink-allotment-7",
        "remote_username": "uplink-allotment-7",
        "remote_password": "s3cretPassw0rd",
        "cleansession": "false",
        "start_type": "automatic",
        "restart_timeout": "5 60",
        "keepalive_interval": "60",
        "try_private": "true",
        "notifications": "true",
        "notification_topic": "garden/allotment-7/federation/uplink-allotment-7/state",
        "bridge_attempt_unsubscribe": "false",
        "bridge_cafile": "/etc/garden/region-ca.pem",
        "bridge_tls_version": "tlsv1.2",
        "bridge_insecure": "false",
    }
    topics = [line for line in lines if line.startswith("topic ")]
    assert topics == [f"topic {t} out 1 garden/allotment-7/ garden/allotment-7/" for t in FORWARDED]
    assert len(topics) == 7
    rules = "\n".join(lines)
    assert not any(word in rules for word in ("/cmd", "/reply", "/config", "/commons", " in ", " both "))


def test_outage_bound_at_a_gardens_rate() -> None:
    assert garden_rate(10, 60.0) == 22.0  # 10 readings, 10 node statuses, a bridge's and a hub's status
    bound = QueueBound(messages=200_000, bytes=100 * 1024 * 1024)
    # by count 200000 / 22 = 9091 min; by bytes 104857600 / (22 * 400) = 11916 min: the count binds
    assert round(bound.outage_hours(22.0), 1) == 151.5
    assert round(QueueBound(messages=10**7, bytes=10 * 1024 * 1024).outage_hours(22.0), 2) == 19.86


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"garden": "a/b"}, "--garden"),
        ({"garden": "+"}, "--garden"),
        ({"host": "bad host"}, "--regional"),
        ({"port": 0}, "--regional"),
        ({"username": "a b"}, "--user"),
        ({"password": "two words"}, "--password-file"),
        ({"password": "has#hash"}, "--password-file"),
        ({"password": ""}, "--password-file"),
        ({"connection": "a.b"}, "--connection"),
        ({"protocol": "mqttv31"}, "--protocol"),
        ({"tls_version": "tlsv1.1"}, "--tls-version"),
        ({"cafile": Path("/a dir/ca.pem")}, "--ca"),
        ({"keepalive_s": 4}, "--keepalive"),
        ({"restart_base_s": 70}, "--restart"),
        ({"queue": QueueBound(messages=0)}, "--max-queued-messages"),
        ({"queue": QueueBound(bytes=10)}, "--max-queued-bytes"),
    ],
)
def test_a_bad_option_is_named(change: dict[str, object], option: str) -> None:
    with pytest.raises(ConfigError) as err:
        bridge_config(dataclasses.replace(UPLINK, **change))  # type: ignore[arg-type]
    assert err.value.path == option


def test_the_password_is_not_in_the_repr() -> None:
    assert "s3cretPassw0rd" not in repr(UPLINK)


def test_regional_address() -> None:
    assert parse_address("region.example.org:18883") == ("region.example.org", 18883)
    assert parse_address("10.0.0.5") == ("10.0.0.5", 8883)
    for bad in ("", "host:", "host:99999", "ho st:1883", "host:x"):
        with pytest.raises(ConfigError) as err:
            parse_address(bad)
        assert err.value.path == "--regional"


def test_the_regional_acl_gives_each_garden_its_own_tree() -> None:
    acl = regional_acl(["g1", "g2"], hub_user="region-hub")
    rules = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert rules == [
        "user uplink-g1",
        "topic write garden/g1/#",
        "user uplink-g2",
        "topic write garden/g2/#",
        "user region-hub",
        "topic read garden/+/node/+/telemetry",
        "topic read garden/+/node/+/status",
        "topic read garden/+/bridge/+/status",
        "topic read garden/+/event/#",
        "topic read garden/+/alert/#",
        "topic read garden/+/bed/+/need",
        "topic readwrite garden/+/hub/#",
        "topic read garden/+/federation/#",
    ]
    for gardens, hub, option in (
        ([], "hub", "--garden"),
        (["g1", "g1"], "hub", "--garden"),
        (["g+"], "hub", "--garden"),
        (["g1"], "uplink-g1", "--hub-user"),
        (["g1"], "a b", "--hub-user"),
    ):
        with pytest.raises(ConfigError) as err:
            regional_acl(gardens, hub)
        assert err.value.path == option


def test_the_regional_listener_is_tls_with_passwords() -> None:
    text = regional_listener(8883, Path("/etc/garden/region"), "0.0.0.0")
    lines = text.splitlines()
    for line in (
        "listener 8883 0.0.0.0",
        "certfile /etc/garden/region/tls/server.pem",
        "keyfile /etc/garden/region/tls/server.key",
        "allow_anonymous false",
        "password_file /etc/garden/region/mosquitto_passwd",
        "acl_file /etc/garden/region/mosquitto_acl",
    ):
        assert line in lines
    with pytest.raises(ConfigError) as err:
        regional_listener(70000, Path("/x"))
    assert err.value.path == "--port"

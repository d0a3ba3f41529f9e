"""Broken config files and environment values, for every part that reads config.

The loaders: the bridge (firmware_bridge.settings), the hub (garden.settings), the
watch (garden.watch_settings), the commons (garden.commons.settings) and the CLI's
own (who you are: garden.node_admin.current_user). Each bad value must give a
ConfigError that names the key (its path in garden.toml, or the variable) and says
how to fix it; through the real ``garden`` command, exit code 2 and that message,
with no traceback (docs/configuration.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.errors import ConfigError
from firmware_bridge.settings import load_bridge_settings
from garden.commons.settings import load_commons_settings
from garden.node_admin import current_user
from garden.settings import load_hub_settings
from garden.watch_settings import load_watch_settings

REPO = Path(__file__).parents[2]
MISSING = "/nonexistent/garden-secret"
A_DIRECTORY = "/"  # exists, but cannot be read as a file (even by root)

Loader = Callable[[Path, Mapping[str, str]], Any]
LOADERS: dict[str, Loader] = {
    "bridge": lambda path, env: load_bridge_settings(path, env),
    "hub": lambda path, env: load_hub_settings(path, env),
    "watch": lambda path, env: load_watch_settings(path, env),
    "commons": lambda path, env: load_commons_settings(path),
    "cli": lambda path, env: current_user(path, env),
}
# The command that loads each part's config first, before it talks to anything.
COMMANDS = {
    "bridge": ["bridge", "run"],
    "hub": ["hub", "run"],
    "watch": ["hub", "run"],
    "commons": ["hub", "run"],
    "cli": ["water", "claim", "bed-1"],
}


@dataclass(frozen=True)
class Case:
    id: str
    service: str
    toml: str
    key: str  # the path or variable the message must name
    hint: str  # and the words that say how to fix it
    env: dict[str, str] = field(default_factory=dict)
    cli: bool = False  # also run through the real command


CASES = [
    # ---------------------------------------------------------------- bridge
    Case("bridge-invalid-toml", "bridge", "[bridge\nid = 'x'\n", "garden.toml", "not valid TOML", cli=True),
    Case("bridge-unknown-section", "bridge", "[brigde]\nid = 'x'\n", "brigde", "expected one of"),
    Case("bridge-unknown-key", "bridge", "[bridge]\nbaudrat = 9600\n", "bridge.baudrat", "expected one of"),
    Case("bridge-wrong-type", "bridge", "[bridge]\nspool_max_rows = 'lots'\n", "bridge.spool_max_rows",
         "must be int", cli=True),
    Case("bridge-bool-for-int", "bridge", "[bridge]\nbaudrate = true\n", "bridge.baudrate", "must be int"),
    Case("bridge-table-as-value", "bridge", "bridge = 5\n", "bridge", "must be a table"),
    Case("bridge-ports-not-a-list", "bridge", "[bridge]\nports = '/dev/ttyUSB0'\n", "bridge.ports", "must be list"),
    Case("bridge-keepalive-range", "bridge", "[bridge]\nkeepalive_s = 1\n", "bridge.keepalive_s", "5-3600"),
    Case("bridge-window-range", "bridge", "[bridge]\npublish_window = 0\n", "bridge.publish_window", "1-10000"),
    Case("bridge-spool-rows-range", "bridge", "[bridge]\nspool_max_rows = 5\n", "bridge.spool_max_rows",
         "at least 100"),
    Case("bridge-baud-negative", "bridge", "[bridge]\nbaudrate = -9600\n", "bridge.baudrate", "positive"),
    Case("bridge-retries-zero", "bridge", "[bridge]\ncommand_retries = 0\n", "bridge.command_retries",
         "at least 1"),
    Case("bridge-timeout-zero", "bridge", "[bridge]\ncommand_timeout_s = 0\n", "bridge.command_timeout_s",
         "more than 0"),
    Case("bridge-status-interval", "bridge", "[bridge]\nstatus_interval_s = -1\n", "bridge.status_interval_s",
         "more than 0"),
    Case("bridge-enum-overflow", "bridge", "[bridge]\nspool_overflow = 'drop_all'\n", "bridge.spool_overflow",
         "'drop_oldest' or 'drop_newest'"),
    Case("bridge-enum-synchronous", "bridge", "[bridge]\nspool_synchronous = 'sometimes'\n",
         "bridge.spool_synchronous", "'normal' or 'full'"),
    Case("bridge-bad-garden-name", "bridge", "[garden]\nid = 'my garden'\n", "garden.id", "letters, digits"),
    Case("bridge-bad-garden-env", "bridge", "", "GARDEN_GARDEN", "letters, digits", {"GARDEN_GARDEN": "a/b"}),
    Case("bridge-bad-id-env", "bridge", "", "GARDEN_BRIDGE_ID", "letters, digits", {"GARDEN_BRIDGE_ID": "shed pi"}),
    Case("bridge-bad-url", "bridge", "[mqtt]\nurl = 'http://hub.local'\n", "mqtt.url", "mqtt://", cli=True),
    Case("bridge-bad-url-port", "bridge", "[mqtt]\nurl = 'mqtt://hub.local:99999'\n", "mqtt.url", "1 to 65535"),
    Case("bridge-bad-url-env", "bridge", "", "GARDEN_MQTT_URL", "mqtt://", {"GARDEN_MQTT_URL": "hub.local:1883"}),
    Case("bridge-secret-in-file", "bridge", "[mqtt]\npassword = 'hunter2'\n", "mqtt.password",
         "GARDEN_MQTT_PASSWORD_FILE"),
    Case("bridge-secret-file-missing", "bridge", "", "GARDEN_MQTT_PASSWORD_FILE", "readable file",
         {"GARDEN_MQTT_PASSWORD_FILE": MISSING}, cli=True),
    Case("bridge-secret-file-unreadable", "bridge", "", "GARDEN_MQTT_PASSWORD_FILE", "readable file",
         {"GARDEN_MQTT_PASSWORD_FILE": A_DIRECTORY}),
    # ------------------------------------------------------------------- hub
    Case("hub-invalid-toml", "hub", "[hub]\nbatch_size = = 3\n", "garden.toml", "not valid TOML"),
    Case("hub-unknown-key", "hub", "[hub]\nbatchsize = 10\n", "hub.batchsize", "expected one of", cli=True),
    Case("hub-wrong-type", "hub", "[hub]\nbatch_ms = 'fast'\n", "hub.batch_ms", "must be int"),
    Case("hub-batch-range", "hub", "[hub]\nbatch_size = 0\n", "hub.batch_size", "1-100000"),
    Case("hub-batch-ms-range", "hub", "[hub]\nbatch_ms = 5\n", "hub.batch_ms", "10-60000"),
    Case("hub-spool-rows-range", "hub", "[hub]\nspool_max_rows = 0\n", "hub.spool_max_rows", "at least"),
    Case("hub-session-expiry-range", "hub", "[hub]\nsession_expiry_s = -5\n", "hub.session_expiry_s", "seconds"),
    Case("hub-status-interval-range", "hub", "[hub]\nstatus_interval_s = 0\n", "hub.status_interval_s",
         "more than 0"),
    Case("hub-timeout-range", "hub", "[influx]\ntimeout_s = 0\n", "influx.timeout_s", "more than 0"),
    Case("hub-bad-name", "hub", "[hub]\nid = 'shed/pi'\n", "hub.id", "letters, digits"),
    Case("hub-bad-name-env", "hub", "", "GARDEN_HUB_ID", "letters, digits", {"GARDEN_HUB_ID": "#"}),
    Case("hub-bad-shared-group", "hub", "[hub]\nshared_group = 'a/b'\n", "hub.shared_group", "letters, digits"),
    Case("hub-bad-influx-url", "hub", "[influx]\nurl = 'localhost:8086'\n", "influx.url", "http://", cli=True),
    Case("hub-bad-influx-url-env", "hub", "", "GARDEN_INFLUX_URL", "http://",
         {"GARDEN_INFLUX_URL": "ftp://db.local"}),
    Case("hub-bad-mqtt-url", "hub", "[mqtt]\nurl = 'mqtt://'\n", "mqtt.url", "no host"),
    Case("hub-secret-in-file", "hub", "[influx]\ntoken = 'abc'\n", "influx.token", "GARDEN_INFLUX_TOKEN_FILE"),
    Case("hub-token-file-missing", "hub", "", "GARDEN_INFLUX_TOKEN_FILE", "readable file",
         {"GARDEN_INFLUX_TOKEN_FILE": MISSING}),
    # ----------------------------------------------------------------- watch
    Case("watch-unknown-key", "watch", "[watch]\nevaluate_every = 60\n", "watch.evaluate_every", "expected one of"),
    Case("watch-negative", "watch", "[watch]\nevaluate_every_s = -1\n", "watch.evaluate_every_s", "positive",
         cli=True),
    Case("watch-wrong-type", "watch", "[watch]\nenabled = 'yes'\n", "watch.enabled", "must be bool"),
    Case("watch-enum", "watch", "[watch]\nnotify_min_severity = 'loud'\n", "watch.notify_min_severity",
         "must be one of"),
    Case("watch-max-repeats", "watch", "[watch]\nmax_repeats = -1\n", "watch.max_repeats", "0 or more"),
    Case("watch-timezone", "watch", "[garden]\ntimezone = 'Mars/Olympus'\n", "garden.timezone", "IANA"),
    Case("watch-latitude-range", "watch", "[garden]\nlatitude = 100\n", "garden.latitude", "-90..90"),
    Case("watch-latitude-env", "watch", "", "GARDEN_LATITUDE", "degrees", {"GARDEN_LATITUDE": "north"}),
    Case("watch-enabled-env", "watch", "", "GARDEN_WATCH_ENABLED", "true or false",
         {"GARDEN_WATCH_ENABLED": "maybe"}),
    Case("watch-smtp-secret", "watch", "[notify.smtp]\nhost = 'smtp.example.org'\npassword = 'x'\n",
         "notify.smtp.password", "GARDEN_SMTP_PASSWORD_FILE"),
    Case("watch-smtp-port", "watch", "[notify.smtp]\nhost = 'smtp.example.org'\nport = 99999\n",
         "notify.smtp.port", "1-65535"),
    Case("watch-smtp-security", "watch", "[notify.smtp]\nhost = 'smtp.example.org'\nsecurity = 'ssl'\n",
         "notify.smtp.security", "'starttls', 'tls' or 'none'"),
    Case("watch-ntfy-url", "watch", "[notify.ntfy]\nserver = 'ntfy.sh'\n", "notify.ntfy.server", "https://"),
    Case("watch-ntfy-secret", "watch", "[notify.ntfy]\ntoken = 'tk'\n", "notify.ntfy.token",
         "GARDEN_NTFY_TOKEN_FILE"),
    Case("watch-smtp-secret-file", "watch", "[notify.smtp]\nhost = 'smtp.example.org'\n",
         "GARDEN_SMTP_PASSWORD_FILE", "readable file", {"GARDEN_SMTP_PASSWORD_FILE": A_DIRECTORY}),
    Case("watch-person-email", "watch", "[[people]]\nname = 'ana'\nemail = 'ana'\n", "people[0].email",
         "like ana@example.org"),
    Case("watch-person-webhook", "watch", "[[people]]\nname = 'ana'\nwebhook = 'ftp://x'\n", "people[0].webhook",
         "http://"),
    Case("watch-person-name", "watch", "[[people]]\nname = 'Ana Lopez'\nemail = 'a@b.org'\n", "people[0].name",
         "letters, digits"),
    Case("watch-person-unreachable", "watch", "[[people]]\nname = 'ana'\n", "people[0]", "give email, ntfy"),
    Case("watch-people-not-array", "watch", "[people]\nname = 'ana'\n", "people", "[[people]]"),
    # --------------------------------------------------------------- commons
    Case("commons-unknown-key", "commons", "[commons]\nclaim_expire_h = 2\n", "commons.claim_expire_h",
         "expected one of", cli=True),
    Case("commons-enum", "commons", "[commons]\nshare_rule = 'fair'\n", "commons.share_rule", "must be one of"),
    Case("commons-range", "commons", "[commons]\nclaim_expires_h = 0\n", "commons.claim_expires_h",
         "more than 0"),
    Case("commons-days", "commons", "[commons]\ncontribution_days = 0\n", "commons.contribution_days",
         "1 to 3650"),
    Case("commons-wrong-type", "commons", "[commons]\nleague_table = 'yes'\n", "commons.league_table",
         "must be bool"),
    Case("commons-rota-day", "commons", "[commons.rota]\nmon = ['ana']\n", "commons.rota.mon", "expected one of"),
    Case("commons-rota-names", "commons", "[commons.rota]\nmonday = 'ana'\n", "commons.rota.monday",
         "list of member names"),
    Case("commons-invalid-toml", "commons", "[commons]\nshare_rule = first_come\n", "garden.toml",
         "not valid TOML"),
    # ------------------------------------------------------------------- CLI
    Case("cli-user-empty", "cli", "[garden]\nuser = ''\n", "garden.user", "1-64 printable", cli=True),
    Case("cli-user-type", "cli", "[garden]\nuser = 7\n", "garden.user", "must be str"),
    Case("cli-user-env", "cli", "", "GARDEN_USER", "1-64 printable", {"GARDEN_USER": "tab\there"}),
    Case("cli-invalid-toml", "cli", "[garden\n", "garden.toml", "not valid TOML"),
]  # fmt: skip


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long messages


def write_config(tmp_path: Path, case: Case) -> Path:
    path = tmp_path / "garden.toml"
    path.write_text(case.toml)
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_loader_names_the_key_and_the_fix(tmp_path: Path, case: Case) -> None:
    path = write_config(tmp_path, case)
    with pytest.raises(ConfigError) as caught:
        LOADERS[case.service](path, case.env)
    message = flat(str(caught.value))
    assert case.key in message, message
    assert flat(case.hint) in message, message
    for secret in ("hunter2", "abc'", "tk'"):
        assert secret not in message  # a secret put in the file is never echoed


def run_cli(tmp_path: Path, case: Case) -> subprocess.CompletedProcess[str]:
    path = write_config(tmp_path, case)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_")}
    env |= {"GARDEN_CONFIG": str(path), "GARDEN_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", **case.env}
    return subprocess.run([sys.executable, "-m", "garden", *COMMANDS[case.service]], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


CLI_CASES = [c for c in CASES if c.cli]


def test_every_service_is_covered_through_the_cli() -> None:
    assert {c.service for c in CLI_CASES} == set(LOADERS)


def test_through_the_real_command_exit_2_and_the_message(tmp_path_factory: pytest.TempPathFactory) -> None:
    dirs = [tmp_path_factory.mktemp(c.id) for c in CLI_CASES]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run_cli, dirs, CLI_CASES))
    for case, result in zip(CLI_CASES, results, strict=True):
        both = flat(result.stdout + result.stderr)
        assert result.returncode == 2, (case.id, result.returncode, both[-500:])
        assert "Traceback" not in both, (case.id, both[-2000:])
        assert case.key in both and flat(case.hint) in both, (case.id, both[-500:])

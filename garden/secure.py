"""``garden secure init``: a new garden's secrets, the broker's auth files and the env files.

Everything goes into one directory (0700), every file 0600:

- one random password per MQTT user: each bridge (``mqtt_bridge_<id>_password``),
  the hub, volunteers' CLI (``mqtt_volunteer_password``); the InfluxDB 1.x writer
  (the hub's, ``influx_hub_password``) and reader (Grafana's and the CLI's,
  ``influx_reader_password``); compose's InfluxDB 2.x admin password and operator
  token; Grafana's admin password. Grafana reads no MQTT, so it has no MQTT user.
  An existing secret is never replaced, unless it is named in ``rotate``;
- ``mqtt_bridge_password``: a hard link to the password of the bridge that runs
  on this machine (what compose's ``bridge`` service and garden-bridge.service load);
- ``mosquitto_passwd`` (hashed) and ``mosquitto_acl`` (one block per bridge, its own
  nodes only: :mod:`garden.mosquitto_auth`); rewritten at every run, from the kept
  passwords and the current node lists;
- ``influxdb-users.influxql``: the InfluxDB 1.x users and grants, for ``influx -import``;
- ``bridge-<id>.env``, ``hub.env``, ``cli.env``, ``grafana.env``: settings, and
  ``*_FILE`` variables naming the secret files; never a secret value;
- with TLS: a CA of the garden's own and a server certificate for the broker (``tls/``).

How the services read 0600 files (``target``):

- ``compose``: the containers read their secrets through compose's bind mounts as
  their own users, so each file a non-root container reads is owned by that
  container's uid (:data:`COMPOSE_UIDS`): chowned here when run as root, else the
  ``sudo chown`` is in the next steps. Mosquitto's entrypoint and influxdb-init run
  as root and read any file. docker-compose 1.29 ignores ``uid``/``gid``/``mode``
  of file secrets (it warns and bind-mounts the host file as it is), so owning the
  file is the way.
- ``native``: systemd reads the files as root (``LoadCredential=``) and hands each
  service a private copy; the services' env files therefore name no secret file
  (an ``EnvironmentFile=`` line would override the unit's credential path with one
  the service cannot read). Mosquitto reads its files as user ``mosquitto``, after
  dropping root: they are installed ``-o mosquitto -m 0600``.

Exceptions: :class:`SecureError` (a file that cannot be written or read, a tool
that failed), and :class:`firmware_bridge.errors.ConfigError` for bad names.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import string
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_bridge.errors import ConfigError
from firmware_bridge.topics import NAME_RE
from garden.errors import GardenError
from garden.influx_access import grant_statements, user_statements
from garden.mosquitto_auth import (
    BridgeNodes,
    check_bridges,
    check_user_line,
    parse_bridge_option,
    password_file_text,
    render_acl,
)

COMPOSE, NATIVE = "compose", "native"
TARGETS = (COMPOSE, NATIVE)
SECRET_LENGTH = 32
ALPHABET = string.ascii_letters + string.digits  # safe in every config syntax and URL
ALL = "all"
TLS = "tls"

# Who reads a file inside compose, when not root: the uid that must own it.
HUB_UID = 10001  # Dockerfile: the image of the hub and the bridge
GRAFANA_UID = 472  # grafana/grafana-oss
INFLUXDB_UID = 1000  # influxdb:2.x, whose entrypoint steps down to it before reading its secrets
MOSQUITTO_UID = 1883  # eclipse-mosquitto: the broker reads its certificate after dropping root
COMPOSE_UIDS = {"hub and bridge": HUB_UID, "grafana": GRAFANA_UID, "influxdb": INFLUXDB_UID, "mosquitto": MOSQUITTO_UID}

DEFAULT_WRITER = "garden_ingest"
DEFAULT_READER = "garden_reader"
NATIVE_SECRETS = Path("/etc/garden/secrets")
NATIVE_CA = Path("/etc/garden/ca.pem")


class SecureError(GardenError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Secret:
    """One random secret: its file, what it is, who reads it, and which container uid owns it in compose."""

    name: str
    what: str
    read_by: str
    compose_uid: int | None = None


@dataclass(frozen=True, slots=True)
class InitOptions:
    directory: Path
    garden: str
    bridges: tuple[BridgeNodes, ...]
    target: str = COMPOSE
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    bridge_mqtt_url: str = ""  # default: mqtt_url
    influx_url: str = "http://127.0.0.1:8086"
    influx_database: str = "garden"
    influx_writer: str = DEFAULT_WRITER
    influx_reader: str = DEFAULT_READER
    local_bridge: str = ""  # whose password mqtt_bridge_password is; default: the first bridge
    secrets_path: Path | None = None  # where the env files say the secrets are; default: directory
    rotate: frozenset[str] = frozenset()
    tls_hosts: tuple[str, ...] = ()  # empty: no TLS
    chown: bool = True  # compose, as root: give each file to the container uid that reads it


@dataclass(frozen=True, slots=True)
class FileReport:
    file: str
    what: str
    read_by: str
    state: str  # created, kept, rotated, written, linked
    mode: str
    owner: str

    def to_json(self) -> dict[str, str]:
        return {
            "file": self.file,
            "what": self.what,
            "read_by": self.read_by,
            "state": self.state,
            "mode": self.mode,
            "owner": self.owner,
        }


@dataclass(frozen=True, slots=True)
class InitReport:
    directory: Path
    target: str
    garden: str
    bridges: tuple[BridgeNodes, ...]
    local_bridge: str
    files: tuple[FileReport, ...]
    access: str
    next_steps: tuple[str, ...]
    hasher: str

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "for": self.target,
            "garden": self.garden,
            "bridges": {b.bridge: list(b.nodes) for b in self.bridges},
            "local_bridge": self.local_bridge,
            "password_hashes": self.hasher,
            "files": [f.to_json() for f in self.files],
            "access": self.access,
            "next_steps": list(self.next_steps),
        }


def bridge_secret(bridge: str) -> str:
    return f"mqtt_bridge_{bridge}_password"


def secrets_of(opts: InitOptions) -> tuple[Secret, ...]:
    """Every random secret of the garden, in the order they are listed."""
    bridges = tuple(
        Secret(
            bridge_secret(b.bridge),
            f"MQTT password of bridge {b.bridge} (user {b.bridge})",
            f"bridge {b.bridge}; mosquitto",
            HUB_UID,
        )
        for b in opts.bridges
    )
    return (
        *bridges,
        Secret("mqtt_hub_password", "MQTT password of the hub (user hub)", "hub; mosquitto", HUB_UID),
        Secret(
            "mqtt_volunteer_password", "MQTT password of volunteers' CLI (user volunteer)", "the garden CLI; mosquitto"
        ),
        Secret("influx_hub_password", f"InfluxDB 1.x: user {opts.influx_writer}, write only", "hub"),
        Secret(
            "influx_reader_password",
            f"InfluxDB 1.x: user {opts.influx_reader}, read only",
            "grafana, the garden CLI, the hub's queries",
        ),
        Secret("influxdb_admin_password", "InfluxDB 2.x admin (compose, first start only)", "influxdb", INFLUXDB_UID),
        Secret(
            "influxdb_admin_token", "InfluxDB 2.x operator token (compose)", "influxdb, influxdb-init", INFLUXDB_UID
        ),
        Secret("grafana_admin_password", "Grafana's admin (first start only)", "grafana", GRAFANA_UID),
    )


def random_secret() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))


# ----------------------------------------------------------------- private files


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a new 0600 file, then move it in place (never a
    moment with a wider mode, never a half-written file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600 by construction
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise SecureError(str(path), f"cannot write: {err.strerror}") from None


def read_existing(path: Path) -> str | None:
    """The secret in ``path`` (surrounding blanks stripped), or None when there is none yet."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SecureError(
            str(path), f"cannot read: {err.strerror} (run as the user that owns it, or as root)"
        ) from None
    if "\n" in value:
        raise SecureError(str(path), "holds more than one line: a secret file is one line")
    return value or None


def _mode(path: Path) -> str:
    return f"{path.stat().st_mode & 0o7777:04o}"


def _owner(path: Path) -> str:
    uid = path.stat().st_uid
    try:
        return f"{pwd.getpwuid(uid).pw_name} ({uid})"
    except KeyError:  # a container's uid, unknown on this host
        return str(uid)


# ------------------------------------------------------------------ hashed users


def hashed_password_file(
    users: dict[str, str], directory: Path, tool: str | None, random_bytes: Callable[[int], bytes] = os.urandom
) -> tuple[str, str]:
    """The Mosquitto password file for ``users`` and how it was hashed.

    With ``mosquitto_passwd`` (``tool``): ``-U`` on a private plaintext copy, so no
    password is ever on a command line. Without it, the same ``$7$`` format in Python.
    ``-U`` hashes every line, hashed or not: it only ever sees plaintext here."""
    if tool is None:
        return password_file_text(users, random_bytes), "PBKDF2-SHA512 ($7$), by garden"
    plain = ""
    for user, password in users.items():
        check_user_line(user, password)
        plain += f"{user}:{password}\n"
    fd, tmp = tempfile.mkstemp(prefix=".mosquitto_passwd.", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(plain)
        done = subprocess.run([tool, "-U", tmp], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise SecureError(tool, f"-U failed: {(done.stderr or done.stdout).strip()}")
        return Path(tmp).read_text(), f"PBKDF2-SHA512 ($7$), by {tool}"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


# ----------------------------------------------------------------------- InfluxDB


def influx_script(opts: InitOptions, writer_password: str, reader_password: str) -> str:
    statements = user_statements((opts.influx_writer, writer_password), (opts.influx_reader, reader_password))
    statements += grant_statements(opts.influx_database, opts.influx_writer, opts.influx_reader)
    head = (
        "# DDL\n"
        f"# InfluxDB 1.x users of garden {opts.garden}, by `garden secure init`: {opts.influx_writer} may only\n"
        f"# write to {opts.influx_database}, {opts.influx_reader} may only read it. Holds their passwords.\n"
        "# As InfluxDB's admin: influx -import -path=influxdb-users.influxql (INFLUX_USERNAME/INFLUX_PASSWORD),\n"
        "# or `garden influx users`, which also updates users that exist already.\n"
    )
    return head + "".join(s + "\n" for s in statements)


# -------------------------------------------------------------------- env files


def _env(lines: Sequence[tuple[str, str] | str]) -> str:
    out = []
    for line in lines:
        out.append(line if isinstance(line, str) else f"{line[0]}={line[1]}")
    return "\n".join(out) + "\n"


def env_files(opts: InitOptions, secrets_path: Path, ca: Path | None) -> dict[str, tuple[str, str, str]]:
    """``{file: (text, what, read by)}``. ``*_FILE`` lines name files under ``secrets_path``."""
    native = opts.target == NATIVE
    bridge_url = opts.bridge_mqtt_url or opts.mqtt_url

    def secret(var: str, name: str, unit: str, credential: str) -> list[tuple[str, str] | str]:
        if native:
            return [f"# {var}: {unit} loads /etc/garden/secrets/{credential} as a systemd credential"]
        return [(var, str(secrets_path / name))]

    head = "# garden {g}: {what}, by `garden secure init`. No secret here: *_FILE names the file that holds it."
    files: dict[str, tuple[str, str, str]] = {}
    for b in opts.bridges:
        lines: list[tuple[str, str] | str] = [
            head.format(g=opts.garden, what=f"bridge {b.bridge}"),
            ("GARDEN_GARDEN", opts.garden),
            ("GARDEN_BRIDGE_ID", b.bridge),
            ("GARDEN_MQTT_USERNAME", b.bridge),
            ("GARDEN_MQTT_URL", bridge_url),
            *secret(
                "GARDEN_MQTT_PASSWORD_FILE",
                bridge_secret(b.bridge),
                "garden-bridge.service",
                "mqtt_bridge_password (this bridge's " + bridge_secret(b.bridge) + ")",
            ),
        ]
        if ca is not None and bridge_url.startswith(("mqtts://", "ssl://")):
            lines += ["# the garden's own CA, which signed the broker's certificate", ("SSL_CERT_FILE", str(ca))]
        files[f"bridge-{b.bridge}.env"] = (_env(lines), f"settings of bridge {b.bridge}", f"bridge {b.bridge}")
    influx_1x = "# InfluxDB 1.x with auth on: the write-only user, and the read-only one for queries"
    hub: list[tuple[str, str] | str] = [
        head.format(g=opts.garden, what="the hub"),
        ("GARDEN_GARDEN", opts.garden),
        ("GARDEN_MQTT_URL", opts.mqtt_url),
        ("GARDEN_MQTT_USERNAME", "hub"),
        *secret("GARDEN_MQTT_PASSWORD_FILE", "mqtt_hub_password", "garden-hub.service", "mqtt_hub_password"),
        ("GARDEN_INFLUX_URL", opts.influx_url),
        ("GARDEN_INFLUX_DATABASE", opts.influx_database),
        influx_1x,
        ("GARDEN_INFLUX_USERNAME", opts.influx_writer),
        *secret("GARDEN_INFLUX_PASSWORD_FILE", "influx_hub_password", "garden-hub.service", "influx_hub_password"),
        ("GARDEN_INFLUX_READ_USERNAME", opts.influx_reader),
        *secret(
            "GARDEN_INFLUX_READ_PASSWORD_FILE", "influx_reader_password", "garden-hub.service", "influx_reader_password"
        ),
    ]
    files["hub.env"] = (_env(hub), "settings of the hub", "hub")
    cli: list[tuple[str, str] | str] = [
        head.format(g=opts.garden, what="volunteers' CLI"),
        "# set -a; . ./cli.env; set +a   then: garden bridge status, garden water needs, ...",
        ("GARDEN_GARDEN", opts.garden),
        ("GARDEN_MQTT_URL", opts.mqtt_url),
        ("GARDEN_MQTT_USERNAME", "volunteer"),
        ("GARDEN_MQTT_PASSWORD_FILE", str(secrets_path / "mqtt_volunteer_password")),
        ("GARDEN_INFLUX_URL", opts.influx_url),
        ("GARDEN_INFLUX_DATABASE", opts.influx_database),
        "# InfluxDB 1.x with auth on: the CLI only reads",
        ("GARDEN_INFLUX_READ_USERNAME", opts.influx_reader),
        ("GARDEN_INFLUX_READ_PASSWORD_FILE", str(secrets_path / "influx_reader_password")),
    ]
    files["cli.env"] = (_env(cli), "settings of volunteers' garden CLI", "the garden CLI")
    grafana: list[tuple[str, str] | str] = [
        head.format(g=opts.garden, what="Grafana"),
        "# GF_*__FILE is read by Grafana itself; GARDEN_GRAFANA_INFLUX_PASSWORD_FILE by deploy/grafana/entrypoint.sh,",
        "# which hands the password to the datasource (dashboards/provisioning/.../garden-influx1.yaml.example).",
        *secret(
            "GF_SECURITY_ADMIN_PASSWORD__FILE",
            "grafana_admin_password",
            "grafana-server.service (drop-in)",
            "grafana_admin_password",
        ),
        ("GARDEN_GRAFANA_INFLUX_URL", opts.influx_url),
        "# InfluxDB 1.x with auth on: the read-only user",
        ("GARDEN_GRAFANA_INFLUX_USERNAME", opts.influx_reader),
        *secret(
            "GARDEN_GRAFANA_INFLUX_PASSWORD_FILE",
            "influx_reader_password",
            "grafana-server.service (drop-in)",
            "influx_reader_password",
        ),
    ]
    files["grafana.env"] = (_env(grafana), "settings of Grafana", "grafana")
    return files


# -------------------------------------------------------------------------- TLS


def default_tls_hosts() -> tuple[str, ...]:
    name = socket.gethostname()
    hosts = ["localhost", "127.0.0.1"]
    if NAME_RE.fullmatch(name.split(".")[0]):
        hosts += [name, f"{name.split('.')[0]}.local"]
    return tuple(dict.fromkeys(hosts))


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def make_tls(tls_dir: Path, garden: str, hosts: Sequence[str], openssl: str | None) -> None:
    """A CA of the garden's own (10 years) and the broker's certificate for ``hosts``
    (825 days, what browsers and Apple accept), with the openssl CLI: EC P-256 keys."""
    if openssl is None:
        raise SecureError("--tls", "needs the openssl command (apt-get install openssl)")
    for host in hosts:
        if not (_is_ip(host) or (host and all(c.isalnum() or c in "-." for c in host))):
            raise ConfigError("--tls-host", f"{host!r} is not a host name or an IP address")
    sans = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    work = Path(tempfile.mkdtemp(prefix=".tls.", dir=tls_dir))

    def run(*args: str) -> None:
        done = subprocess.run([openssl, *args], cwd=work, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SecureError(f"openssl {args[0]}", done.stderr.strip().splitlines()[-1] if done.stderr else "failed")

    try:
        os.chmod(work, 0o700)
        run(
            "req",
            "-x509",
            *ec,
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3650",
            "-sha256",
            "-subj",
            f"/CN=Garden Commons {garden} CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        )
        run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-sha256", "-subj", f"/CN={hosts[0]}")
        (work / "server.ext").write_text(
            f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        run(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            f"0x{secrets.token_hex(16)}",
            "-out",
            "server.pem",
            "-days",
            "825",
            "-sha256",
            "-extfile",
            "server.ext",
        )
        for name in ("ca.key", "ca.pem", "server.key", "server.pem"):
            write_private(tls_dir / name, (work / name).read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------ the run


def check_options(opts: InitOptions) -> None:
    if opts.target not in TARGETS:
        raise ConfigError("--for", f"must be one of {list(TARGETS)}")
    if not NAME_RE.fullmatch(opts.garden):
        raise ConfigError("garden.id", "must be 1-32 letters, digits, '-' or '_'")
    if not opts.bridges:
        raise ConfigError(
            "bridges", "no bridges: give --bridge ID=node,node... or [bridges.<id>] nodes = [...] in garden.toml"
        )
    check_bridges(opts.bridges)
    if opts.local_bridge and opts.local_bridge not in {b.bridge for b in opts.bridges}:
        raise ConfigError("--local-bridge", f"{opts.local_bridge!r} is not one of the bridges")
    known = {s.name for s in secrets_of(opts)} | {b.bridge for b in opts.bridges} | {ALL, TLS, "hub", "volunteer"}
    for name in opts.rotate - known:
        raise ConfigError("--rotate", f"{name!r}: expected a secret file, a bridge id, hub, volunteer, tls or all")


def _rotated(opts: InitOptions, s: Secret) -> bool:
    if ALL in opts.rotate or s.name in opts.rotate:
        return True
    user = s.name.removeprefix("mqtt_").removesuffix("_password").removeprefix("bridge_")
    return s.name.startswith("mqtt_") and user in opts.rotate


def _link_alias(directory: Path, alias: str, target: str) -> None:
    path = directory / alias
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.link(directory / target, path)


def init_secrets(
    opts: InitOptions,
    *,
    make_secret: Callable[[], str] = random_secret,
    random_bytes: Callable[[int], bytes] = os.urandom,
    passwd_tool: str | None = None,
    openssl: str | None = None,
) -> InitReport:
    """Make what is missing (or asked to rotate), rewrite what is derived, fix modes; report it.

    ``passwd_tool``: ``mosquitto_passwd``, or None to hash in Python."""
    check_options(opts)
    directory = opts.directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    except OSError as err:
        raise SecureError(str(directory), f"cannot make it private: {err.strerror}") from None
    directory = directory.resolve()
    secrets_path = opts.secrets_path or directory
    local = opts.local_bridge or opts.bridges[0].bridge
    reports: list[FileReport] = []
    values: dict[str, str] = {}
    uids: dict[str, int] = {}

    def report(name: str, what: str, read_by: str, state: str) -> None:
        path = directory / name
        reports.append(FileReport(name, what, read_by, state, _mode(path), _owner(path)))

    for s in secrets_of(opts):
        path = directory / s.name
        existing = read_existing(path)
        if existing is not None and not _rotated(opts, s):
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
                state = "kept (mode fixed)"
            else:
                state = "kept"
            values[s.name] = existing
        else:
            values[s.name] = make_secret()
            write_private(path, values[s.name] + "\n")
            state = "rotated" if existing is not None else "created"
        if s.compose_uid is not None:
            uids[s.name] = s.compose_uid
        report(s.name, s.what, s.read_by, state)

    _link_alias(directory, "mqtt_bridge_password", bridge_secret(local))
    report(
        "mqtt_bridge_password",
        f"the same file as {bridge_secret(local)} (a hard link): this machine's bridge",
        f"compose's bridge service; garden-bridge.service (bridge {local})",
        "linked",
    )

    users = {b.bridge: values[bridge_secret(b.bridge)] for b in opts.bridges}
    users |= {"hub": values["mqtt_hub_password"], "volunteer": values["mqtt_volunteer_password"]}
    passwd, hasher = hashed_password_file(users, directory, passwd_tool, random_bytes)
    write_private(directory / "mosquitto_passwd", passwd)
    report("mosquitto_passwd", f"the broker's users, hashed: {', '.join(users)}", "mosquitto (native)", "written")
    write_private(directory / "mosquitto_acl", render_acl(opts.garden, opts.bridges))
    report("mosquitto_acl", "who may publish and read what; each bridge its own nodes", "mosquitto", "written")
    script = influx_script(opts, values["influx_hub_password"], values["influx_reader_password"])
    write_private(directory / "influxdb-users.influxql", script)
    report(
        "influxdb-users.influxql",
        "InfluxDB 1.x users and grants (holds their passwords)",
        "influx -import, as InfluxDB's admin",
        "written",
    )

    ca: Path | None = None
    if opts.tls_hosts:
        tls_dir = directory / TLS
        tls_dir.mkdir(exist_ok=True)
        os.chmod(tls_dir, 0o700)
        have = all((tls_dir / n).exists() for n in ("ca.key", "ca.pem", "server.key", "server.pem"))
        rotate_tls = TLS in opts.rotate or ALL in opts.rotate
        if not have or rotate_tls:
            make_tls(tls_dir, opts.garden, opts.tls_hosts, openssl)
        state = "rotated" if have and rotate_tls else ("created" if not have else "kept")
        for name, what, read_by in (
            ("ca.key", "the garden CA's private key: signs server certificates", "nobody; keep it offline"),
            ("ca.pem", "the garden's CA certificate (public)", "clients: SSL_CERT_FILE"),
            ("server.key", "the broker's TLS private key", "mosquitto"),
            ("server.pem", f"the broker's certificate for {', '.join(opts.tls_hosts)}", "mosquitto"),
        ):
            if (tls_dir / name).stat().st_mode & 0o077:
                os.chmod(tls_dir / name, 0o600)
            report(f"{TLS}/{name}", what, read_by, state)
        uids[f"{TLS}/server.key"] = uids[f"{TLS}/server.pem"] = MOSQUITTO_UID
        ca = NATIVE_CA if opts.target == NATIVE else secrets_path / TLS / "ca.pem"

    for name, (text, what, read_by) in env_files(opts, secrets_path, ca).items():
        write_private(directory / name, text)
        report(name, what, read_by, "written")

    chowned = False
    if opts.target == COMPOSE and opts.chown and hasattr(os, "geteuid") and os.geteuid() == 0:
        for name, uid in uids.items():
            os.chown(directory / name, uid, -1)
        chowned = True
        reports = [
            FileReport(r.file, r.what, r.read_by, r.state, _mode(directory / r.file), _owner(directory / r.file))
            for r in reports
        ]
    return InitReport(
        directory=directory,
        target=opts.target,
        garden=opts.garden,
        bridges=opts.bridges,
        local_bridge=local,
        files=tuple(reports),
        access=access_text(opts.target, chowned),
        next_steps=next_steps(opts, directory, local, uids, chowned),
        hasher=hasher,
    )


def access_text(target: str, chowned: bool) -> str:
    if target == NATIVE:
        return (
            "Every file is 0600 and the directory 0700, owned by whoever ran this (root, for /etc/garden/secrets). "
            "systemd reads the services' secrets as root (LoadCredential= in garden-bridge.service and "
            "garden-hub.service) and hands each service a private copy; Mosquitto reads its two files as user "
            "mosquitto, so they are installed owned by it, 0600."
        )
    owned = (
        "each file a non-root container reads now belongs to that container's uid"
        if chowned
        else "each file a non-root container reads must belong to that container's uid (below)"
    )
    uids = ", ".join(f"{who} {uid}" for who, uid in COMPOSE_UIDS.items())
    return (
        f"Every file is 0600 and the directory 0700. Compose bind-mounts each secret file into its container "
        f"(/run/secrets/<name>) with the host file's owner and mode, so {owned} ({uids}); the mosquitto "
        "entrypoint and influxdb-init run as root and read any file. docker-compose 1.29 ignores uid/gid/mode on "
        "file secrets, so ownership is the way."
    )


def next_steps(opts: InitOptions, directory: Path, local: str, uids: dict[str, int], chowned: bool) -> tuple[str, ...]:
    d = directory
    steps: list[str] = []
    if opts.target == COMPOSE:
        if not chowned and uids:
            by_uid: dict[int, list[str]] = {}
            for name, uid in uids.items():
                by_uid.setdefault(uid, []).append(str(d / name))
            steps += [f"sudo chown {uid} {' '.join(names)}" for uid, names in sorted(by_uid.items())]
        steps += [
            f"in .env: GARDEN_SECRETS_DIR={d}  GARDEN_GARDEN={opts.garden}  GARDEN_BRIDGE_ID={local}",
            "docker-compose up -d   (after a change of node list or password: docker-compose up -d "
            "--force-recreate mosquitto)",
        ]
        others = [b.bridge for b in opts.bridges if b.bridge != local]
        if others:
            steps.append(
                "bridges on other machines (" + ", ".join(others) + "): add each to GARDEN_MQTT_USERS of the "
                "mosquitto service with a secret for its mqtt_bridge_<id>_password (docs/deploy.md, "
                "'Adding a bridge'); give each its bridge-<id>.env and password file"
            )
    else:
        steps += [
            f"sudo install -m 0600 -o mosquitto -g mosquitto {d}/mosquitto_passwd /etc/mosquitto/garden.passwd",
            f"sudo install -m 0600 -o mosquitto -g mosquitto {d}/mosquitto_acl /etc/mosquitto/garden.acl",
            "sudo systemctl reload mosquitto   (SIGHUP: it rereads both files; connected clients keep their "
            "sessions and get the new rules)",
        ]
        if d != NATIVE_SECRETS:
            steps.append(
                f"the units load their secrets from {NATIVE_SECRETS}: sudo cp -a {d}/. {NATIVE_SECRETS}/   "
                f"(or run this again with --dir {NATIVE_SECRETS})"
            )
        steps += [
            f"sudo install -m 0640 -g garden {d}/hub.env /etc/garden/hub.env",
            f"sudo install -m 0640 -g garden {d}/bridge-{local}.env /etc/garden/bridge.env",
            "sudo systemctl restart garden-hub garden-bridge",
            "on each other bridge's machine: /etc/garden/bridge.env from its bridge-<id>.env, and its "
            "mqtt_bridge_<id>_password as /etc/garden/secrets/mqtt_bridge_password (0600 root)",
        ]
        if opts.tls_hosts:
            steps += [
                f"sudo install -m 0600 -o mosquitto -g mosquitto {d}/tls/server.key /etc/mosquitto/certs/privkey.pem",
                f"sudo install -m 0644 {d}/tls/server.pem /etc/mosquitto/certs/fullchain.pem",
                f"sudo install -m 0644 {d}/tls/ca.pem {NATIVE_CA}   (and to each bridge's machine)",
            ]
    if opts.target == COMPOSE:
        steps.append(
            "InfluxDB 2.x (compose): its scoped tokens are made by influxdb-init at `docker-compose up`; "
            "the InfluxDB 1.x files here are for a native hub"
        )
    else:
        steps.append(
            "InfluxDB 1.x: as its admin, INFLUX_USERNAME=admin INFLUX_PASSWORD=... influx -import "
            f"-path={d}/influxdb-users.influxql   (or: garden influx users, with the env of {d}/hub.env)"
        )
    # Native env files name no secret file (the units load them): the doctor is given them here.
    files = (
        ""
        if opts.target == COMPOSE
        else f"GARDEN_MQTT_PASSWORD_FILE={d}/mqtt_hub_password GARDEN_INFLUX_PASSWORD_FILE={d}/influx_hub_password "
        f"GARDEN_INFLUX_READ_PASSWORD_FILE={d}/influx_reader_password "
    )
    steps += [
        f"volunteers: set -a; . {d}/cli.env; set +a   (hand them the volunteer password, not this directory)",
        f"sudo sh -c 'set -a; . {d}/hub.env; {files}garden doctor --security'   (anonymous access, weak "
        "passwords, scopes, TLS, file modes)",
    ]
    if opts.tls_hosts:
        steps.append("TLS: enable the 8883 listener (docs/security.md, 'TLS'); bridges then use mqtts://<host>:8883")
    return tuple(steps)


def bridges_for(cli: Sequence[str], config: tuple[BridgeNodes, ...]) -> tuple[BridgeNodes, ...]:
    """``--bridge`` options if any (they replace the config's list), else the config's."""
    if cli:
        chosen = tuple(parse_bridge_option(text) for text in cli)
        check_bridges(chosen, "--bridge")
        return chosen
    return config

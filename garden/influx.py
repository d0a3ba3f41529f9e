"""The InfluxDB adapter: version detection, writes, InfluxQL reads, clear errors.

- **Version** comes from ``/ping`` (the ``X-Influxdb-Version`` header).
- **Writes** are line protocol (built by :mod:`garden.points`). Servers that
  have ``/api/v2/write`` (1.8 and newer, 2.x, 3.x) get it through
  influxdb-client's write API; older 1.x (Debian's and Raspberry Pi OS's 1.6)
  get v1 ``/write``.
- **Reads** are InfluxQL over ``/query``, which 1.x, 2.x (through a DBRP
  mapping) and 3.x all answer. User input goes only in bound parameters
  (``params``), never into the query text. No Flux anywhere.
- **Auth**: a token (2.x, 3.x: ``Authorization: Token``) or a user and password
  (1.x: basic auth). Two credentials, so each can be scoped to its job: the
  *write* credential (``token`` or ``username``/``password``) is used only for
  writes; the *read* credential (``read_token`` or ``read_username``/
  ``read_password``) for every ``/query``. Without a read credential, queries
  use the write one (a dev setup with auth off, or a single credential that
  may do both). docs/deploy.md, "InfluxDB credentials", and
  :mod:`garden.influx_access` (the 1.x users, and the checks of each scope).

Errors are :class:`InfluxError` subclasses whose message names the command
that fixes them.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import select
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from garden.errors import GardenError

if TYPE_CHECKING:
    # Imported where used: it takes a third of a second, and most CLI commands load this
    # module (for InfluxSettings) without ever writing through the v2 API.
    from influxdb_client.client.influxdb_client import InfluxDBClient

log = logging.getLogger(__name__)


class InfluxError(GardenError):
    """Something went wrong talking to InfluxDB."""


class InfluxUnreachable(InfluxError):
    def __init__(self, url: str, problem: str) -> None:
        super().__init__(
            f"cannot reach InfluxDB at {url}: {problem}. Is it running? "
            "(scripts/run.sh starts one; `garden doctor` checks the setup)"
        )
        self.url = url


class InfluxAuthError(InfluxError):
    """InfluxDB refused a credential (HTTP 401: unknown user, wrong password or token) or
    refused what it asked for (``forbidden``, HTTP 403: a write credential that may not read,
    a read credential that may not write). The message names the credential and its variables."""

    def __init__(self, url: str, problem: str, credential: Credential | None = None, *,
                 forbidden: bool = False, action: str = "") -> None:  # fmt: skip
        who = credential.describe() + credential.note() if credential is not None else "ours"
        hint = credential.env_hint() if credential is not None else WRITE_VARS
        head = f"InfluxDB at {url} refused our credentials: {who}" + (f" may not {action}" if forbidden else "")
        super().__init__(f"{head} ({problem}). Check {hint}; `garden doctor --security` shows each one's scope")
        self.url = url
        self.problem = problem
        self.credential = credential
        self.forbidden = forbidden


class InfluxMissingDatabase(InfluxError):
    def __init__(self, database: str) -> None:
        super().__init__(
            f"InfluxDB has no database or bucket {database!r}. Create it with `garden hub init` "
            "(1.x), or `influx bucket create` plus a DBRP mapping (2.x)"
        )
        self.database = database


class InfluxRejected(InfluxError):
    """The server refused the data itself (a 4xx other than auth): retrying will not help."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"InfluxDB rejected the write: {problem}")
        self.problem = problem


class InfluxQueryError(InfluxError):
    def __init__(self, query: str, problem: str) -> None:
        super().__init__(f"InfluxQL query failed: {problem}")
        self.query = query
        self.problem = problem


WRITE_VARS = "GARDEN_INFLUX_TOKEN (2.x/3.x) or GARDEN_INFLUX_USERNAME/GARDEN_INFLUX_PASSWORD (1.x)"
READ_VARS = "GARDEN_INFLUX_READ_TOKEN (2.x/3.x) or GARDEN_INFLUX_READ_USERNAME/GARDEN_INFLUX_READ_PASSWORD (1.x)"
ADMIN_VARS = "GARDEN_INFLUX_ADMIN_USERNAME/GARDEN_INFLUX_ADMIN_PASSWORD"


@dataclass(frozen=True, slots=True)
class Credential:
    """One way of authenticating: a token, a user and password, or nothing (anonymous).

    ``role`` is what it is for: ``write``, ``read``, ``admin`` or ``anonymous``;
    ``stand_in`` marks the write credential used for queries because no read
    credential is set. Its repr never shows the secret."""

    role: str
    token: str | None = None
    username: str | None = None
    password: str | None = None
    stand_in: bool = False

    @property
    def is_set(self) -> bool:
        return bool(self.token or self.username)

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Token {self.token}"}
        if self.username:
            # UTF-8, as curl and the influx CLI send it: influxd compares the bytes.
            pair = f"{self.username}:{self.password or ''}".encode()
            return {"authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    def kind(self) -> str:
        """``token``, ``user <name>`` or ``no credentials``: what may be shown."""
        return "token" if self.token else (f"user {self.username}" if self.username else "no credentials")

    def describe(self) -> str:
        if self.role == "anonymous":
            return "anonymous requests"
        if not self.is_set:
            return "anonymous requests (no credential is set)"
        return f"the {self.role} credential ({self.kind()})"

    def note(self) -> str:
        """Why this credential was used, when that is not obvious."""
        return ", used for queries as no read credential is set," if self.stand_in else ""

    def env_hint(self) -> str:
        if self.role == "read":
            return READ_VARS
        if self.role == "admin":
            return ADMIN_VARS
        if self.stand_in or (self.role == "write" and not self.is_set):
            return f"{WRITE_VARS}, or set a read credential: {READ_VARS}"
        return WRITE_VARS

    def __repr__(self) -> str:  # never show secrets
        return f"Credential({self.role}, {self.kind()})"


ANONYMOUS = Credential("anonymous")


@dataclass(frozen=True, slots=True)
class InfluxSettings:
    url: str = "http://127.0.0.1:8086"
    database: str = "garden"
    retention_policy: str = ""  # "" is the database's default
    token: str | None = None  # the write credential: writes only ...
    username: str | None = None
    password: str | None = None
    org: str = "garden"
    timeout_s: float = 10.0
    read_token: str | None = None  # ... the read credential: every /query (else the write one)
    read_username: str | None = None
    read_password: str | None = None

    @property
    def has_read_credential(self) -> bool:
        return bool(self.read_token or self.read_username)

    def credential(self, *, read: bool) -> Credential:
        """The credential for queries (``read``) or for writes."""
        if read and self.has_read_credential:
            return Credential("read", self.read_token, self.read_username, self.read_password)
        stand_in = read and bool(self.token or self.username)
        return Credential("write", self.token, self.username, self.password, stand_in=stand_in)

    def __repr__(self) -> str:  # never show secrets
        write = self.credential(read=False).kind()
        read = self.credential(read=True).kind() if self.has_read_credential else "as write"
        return f"InfluxSettings({self.url}, db={self.database}, write: {write}, read: {read})"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version: str
    major: int
    minor: int

    @property
    def has_v2_write(self) -> bool:
        """1.8 added /api/v2/write; 2.x and 3.x have it."""
        return (self.major, self.minor) >= (1, 8)


@dataclass(frozen=True, slots=True)
class Series:
    """One series of an InfluxQL result."""

    name: str
    tags: Mapping[str, str]
    columns: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...] = field(default_factory=tuple)

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.values]


def parse_version(header: str) -> tuple[int, int]:
    match = re.match(r"v?(\d+)\.(\d+)", header.strip())
    if not match:
        raise InfluxError(f"cannot tell the InfluxDB version from {header!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: http.client.HTTPMessage
    data: bytes


class HttpTransport:
    """HTTP/1.1 to one server with the standard library: kept-alive connections in a pool,
    thread-safe, no retries. (urllib3, which the installed urllib3-future replaces, took a
    quarter of a second to import: most of what a quick ``garden status`` waited for.)"""

    def __init__(self, url: str, connect_timeout_s: float, read_timeout_s: float) -> None:
        import ssl

        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.problem = ""  # a URL no connection can be made to: said at the first request
        try:
            self.port = parts.port or (443 if self.https else 80)
        except ValueError as err:
            self.port, self.problem = 0, str(err)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._ssl = ssl.create_default_context() if self.https else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        if self.problem:
            raise OSError(self.problem)
        with self._lock:
            while self._idle:
                kept = self._idle.pop()
                if kept.sock is not None and not _dropped(kept.sock):
                    return kept
                kept.close()
        conn: http.client.HTTPConnection
        if self._ssl is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.connect_timeout_s, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout_s)
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(self.read_timeout_s)
        return conn

    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> HttpResponse:
        """Raises OSError or http.client.HTTPException when there is no answer."""
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=dict(headers))
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        # As urllib3 logged each request: method, path (not the query: it may hold a
        # query's text), status. Credentials travel in headers, never logged.
        log.debug("%s %s: %d, %d bytes", method, path.split("?", 1)[0], response.status, len(data))
        return HttpResponse(response.status, response.headers, data)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _dropped(sock: socket.socket) -> bool:
    """A kept-alive connection the server has closed (or sent something unasked on)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Influx:
    """One InfluxDB server. Thread-safe for concurrent queries and writes."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self._http = HttpTransport(settings.url, min(3.0, settings.timeout_s), settings.timeout_s)
        self._base = urlsplit(settings.url).path.rstrip("/")
        self._server: ServerInfo | None = None
        self._client: InfluxDBClient | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]
        self._http.close()

    # ----------------------------------------------------------- plumbing

    def _request(self, method: str, path: str, fields: Mapping[str, str] | None = None,
                 body: bytes | None = None, *, credential: Credential) -> HttpResponse:  # fmt: skip
        """``fields`` go in the URL, except for a POST without ``body``: there, as a form."""
        target = self._base + path
        headers = credential.headers()
        if body is not None:
            target += "?" + "&".join(f"{k}={quote(v)}" for k, v in (fields or {}).items())
        elif fields and method == "POST":
            body = urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif fields:
            target += "?" + urlencode(fields)
        try:
            return self._http.request(method, target, body, headers)
        except (OSError, http.client.HTTPException) as err:
            raise InfluxUnreachable(self.settings.url, _reason(err)) from err

    def probe(self, method: str, path: str, fields: Mapping[str, str] | None = None,
              body: bytes | None = None, *, credential: Credential) -> tuple[int, str]:  # fmt: skip
        """One request as ``credential``: its HTTP status and (the start of) its body, whatever
        they are. For the scope checks of :mod:`garden.influx_access`; raises only
        :class:`InfluxUnreachable`."""
        response = self._request(method, path, fields, body, credential=credential)
        return response.status, response.data.decode(errors="replace")[:2000]

    def _check(self, response: HttpResponse, what: str, credential: Credential) -> None:
        status = response.status
        if status < 300:
            return
        text = response.data.decode(errors="replace")[:300]
        if status in (401, 403):
            problem = _error_text(text) or f"HTTP {status}"
            action = "write" if what == "write" else "query"
            raise InfluxAuthError(self.settings.url, problem, credential, forbidden=status == 403, action=action)
        if "database not found" in text or ("bucket" in text and "not found" in text):
            raise InfluxMissingDatabase(self.settings.database)
        if 400 <= status < 500 and status not in (408, 429):  # timeout and throttling pass
            raise InfluxRejected(f"{what}: HTTP {status}: {text}")
        raise InfluxUnreachable(self.settings.url, f"{what}: HTTP {status}: {text}")

    # ---------------------------------------------------------------- API

    def ping(self) -> ServerInfo:
        # /ping needs no privilege; with 1.8's ping-auth-enabled, any valid user.
        credential = self.settings.credential(read=True)
        response = self._request("GET", "/ping", credential=credential)
        if response.status >= 300:
            self._check(response, "ping", credential)
        header = response.headers.get("X-Influxdb-Version")
        if not header:
            raise InfluxUnreachable(self.settings.url, "no X-Influxdb-Version header: is this InfluxDB?")
        major, minor = parse_version(header)
        self._server = ServerInfo(header, major, minor)
        return self._server

    @property
    def server(self) -> ServerInfo:
        return self._server or self.ping()

    def write_lines(self, lines: Sequence[str], *, retention_policy: str | None = None) -> None:
        """Write points (line protocol, ms precision). Raises an InfluxError on failure."""
        if not lines:
            return
        rp = self.settings.retention_policy if retention_policy is None else retention_policy
        body = "\n".join(lines).encode()
        if self.server.has_v2_write:
            self._write_v2(body, rp)
        else:
            params = {"db": self.settings.database, "precision": "ms"}
            if rp:
                params["rp"] = rp
            credential = self.settings.credential(read=False)
            self._check(self._request("POST", "/write", params, body=body, credential=credential), "write", credential)

    def _write_v2(self, body: bytes, rp: str) -> None:
        import urllib3
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.rest import ApiException

        s = self.settings
        credential = s.credential(read=False)  # never the read credential: this client only writes
        if self._client is None:
            # 1.8 takes "user:password" as the token; 2.x/3.x a real token.
            token = s.token or (f"{s.username}:{s.password or ''}" if s.username else "")
            self._client = InfluxDBClient(url=s.url, token=token, org=s.org, timeout=int(s.timeout_s * 1000))
        bucket = f"{s.database}/{rp}" if rp else s.database
        try:
            self._client.write_api(write_options=SYNCHRONOUS).write(
                bucket=bucket,
                org=s.org,
                record=body,
                write_precision="ms",  # type: ignore[arg-type]
            )
        except ApiException as err:
            text = (err.body or err.reason or "").strip() if isinstance(err.body, str | None) else str(err)
            if err.status in (401, 403):
                problem = _error_text(text) or f"HTTP {err.status}"
                raise InfluxAuthError(s.url, problem, credential, forbidden=err.status == 403, action="write") from err
            if err.status == 404:
                raise InfluxMissingDatabase(bucket) from err
            if err.status is not None and 400 <= err.status < 500 and err.status not in (408, 429):
                raise InfluxRejected(f"HTTP {err.status}: {text}") from err
            raise InfluxUnreachable(s.url, f"HTTP {err.status}: {text}") from err
        except urllib3.exceptions.HTTPError as err:
            raise InfluxUnreachable(s.url, _reason(err)) from err

    def query(self, q: str, params: Mapping[str, Any] | None = None, *, database: str | None = None) -> list[Series]:
        """Run InfluxQL, as the read credential; user input only in ``params`` (``$name`` in ``q``).
        Times in epoch ms."""
        fields = {"q": q, "db": database or self.settings.database, "epoch": "ms"}
        if params:
            fields["params"] = json.dumps(params)
        credential = self.settings.credential(read=True)
        response = self._request("POST", "/query", fields, credential=credential)
        self._check(response, "query", credential)
        try:
            doc = json.loads(response.data)
        except ValueError as err:
            raise InfluxQueryError(q, f"not JSON: {err}") from err
        out: list[Series] = []
        for result in doc.get("results", []):
            if "error" in result:
                if "database not found" in result["error"]:
                    raise InfluxMissingDatabase(database or self.settings.database)
                if is_refusal(result["error"]):  # 2.x answers some refusals in the results, with 200
                    raise InfluxAuthError(
                        self.settings.url, result["error"], credential, forbidden=True, action="query"
                    )
                raise InfluxQueryError(q, result["error"])
            for series in result.get("series", []):
                out.append(
                    Series(
                        series.get("name", ""),
                        series.get("tags", {}),
                        tuple(series.get("columns", [])),
                        tuple(tuple(v) for v in series.get("values", [])),
                    )
                )
        return out

    def execute(self, statement: str) -> None:
        """An administrative InfluxQL statement (CREATE DATABASE ...), as the read credential
        (so with settings whose only credential is an admin's). No user input here."""
        self.query(statement, database="")


def is_refusal(text: str) -> bool:
    """Whether an InfluxDB error message says "not allowed" (1.x: "not authorized to execute
    statement ..."; 2.x: "insufficient permissions", "unauthorized access")."""
    lowered = text.lower()
    return "not authorized" in lowered or "insufficient permission" in lowered or "unauthorized" in lowered


def _error_text(body: str) -> str:
    """The ``error`` (1.x) or ``message`` (2.x) of a JSON error body; else the body itself."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.strip()
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    return body.strip()


def _reason(err: Exception) -> str:
    # urllib3 (influxdb-client's) puts the connection object's repr first; the cause is after it.
    if isinstance(err, TimeoutError):  # socket.timeout too
        return f"no answer within the timeout ({err or 'timed out'})"
    if isinstance(err, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return f"the connection was closed without an answer ({err})"
    text = str(getattr(err, "reason", None) or err) or type(err).__name__
    return text.split(">: ", 1)[-1]

"""Scoped InfluxDB credentials: the 1.x users, and what each credential may really do.

The hub writes with one credential and queries with another (:mod:`garden.influx`);
Grafana and the CLI only query. So that a stolen credential does as little harm as
possible, the *write* credential may only write and the *read* credential may only
read (docs/deploy.md, "InfluxDB credentials"):

- on InfluxDB 1.x they are two users with GRANTs on the garden's database, made by
  :func:`apply_users` with an admin's credential (``garden influx users``);
- on 2.x they are two tokens scoped to the garden's buckets, made by
  deploy/influxdb/init-influxdb.sh (``hub.token`` writes, ``hub-read.token`` and
  ``grafana.token`` read).

:func:`check_scopes` asks the server what each configured credential may do, for
``garden doctor --security``. Its probes store nothing and change nothing:

- **anonymous**: the read and the write probe below with no credential at all.
  1.x with ``auth-enabled = true`` answers 401 "unable to parse authentication
  credentials"; with auth on but no admin user yet, 403 "create admin user first"
  (then anyone who reaches the port can make themselves admin: also a failure).
  2.x answers 401.
- **read probe**: ``SHOW MEASUREMENTS LIMIT 1`` on the database (``/query``; it
  reads one measurement name, which is thrown away). 1.6 answers 200 to a user
  with READ (or ALL) on it, and 403 "not authorized to execute statement ...,
  requires READ on <db>" to one without. 2.x answers through the DBRP mapping:
  a token that may not read the bucket gets an error (some 2.x versions put
  "insufficient permissions" in a 200 answer's results, which counts as "may
  not"); 2.0 and 2.1 let write-only tokens read through ``/query``
  (influxdata/influxdb#23110, fixed in 2.2), which this probe shows.
- **write probe**: ``POST /write?db=<db>&rp=<rp>`` with an empty body, which
  writes no point. 1.6 checks the user's WRITE privilege before it reads the body:
  204 with it, 403 "user is not authorized to write to database" without, 401 for
  a wrong password, 404 "database not found" (before any authorization) when
  the database does not exist. 2.x's v1-compatible ``/write`` also checks the
  token's write permission on the bucket first (403 without); 2.1 and newer
  answer 204 to an empty body, 2.0 400 "writing requires points", which means
  the token passed the check and counts as "may write".
- **admin probe**: 1.x: ``SHOW USERS``, which only an admin may run (200 for an
  admin, 403 "requires admin privilege" otherwise). 2.x: ``GET
  /api/v2/authorizations``, whose answer lists only the tokens the caller may
  read: an operator or all-access token sees them (a failure), a token scoped to
  buckets sees none (or gets 401/403).

What 1.6 answers is checked against the real server in
tests/security/test_influx_access.py; the 2.x answers are from InfluxDB's
sources and issues, and not run here (no 2.x on these machines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from garden.influx import (
    ANONYMOUS,
    Credential,
    Influx,
    InfluxAuthError,
    InfluxError,
    InfluxMissingDatabase,
    InfluxQueryError,
    InfluxSettings,
    ServerInfo,
    is_refusal,
)

OK, WARN, FAIL = "ok", "warn", "fail"
Row = tuple[str, str, str]  # (status, subject, message)


class InfluxUserError(InfluxError):
    """A user name or password that cannot be an InfluxDB user's, or a pair of users that
    would not separate writing from reading."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what}: {problem}")
        self.what = what
        self.problem = problem


# ------------------------------------------------------------------ InfluxQL text


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes: a backslash and a double quote escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal in single quotes: a backslash and a single quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_name(name: str) -> str:
    if not name:
        raise InfluxUserError("user name ''", "empty (InfluxDB says: username required)")
    if ":" in name:
        # HTTP basic auth is "user:password": the user name ends at the first colon.
        raise InfluxUserError(f"user name {name!r}", "holds ':', so it could never log in with a password")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InfluxUserError(f"user name {name!r}", "holds a control character")
    if name != name.strip():
        raise InfluxUserError(f"user name {name!r}", "starts or ends with a space")
    return name


def _check_password(name: str, password: str) -> str:
    if not password:
        raise InfluxUserError(f"the password of {name!r}", "empty: it would protect nothing")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise InfluxUserError(f"the password of {name!r}", "holds a control character (a line break?)")
    return password


def _check_pair(writer: str, reader: str) -> None:
    _check_name(writer)
    _check_name(reader)
    if writer == reader:
        raise InfluxUserError(
            f"user {writer!r}", "is both the writer and the reader: they must be two users, one per scope"
        )


def user_statements(writer: tuple[str, str], reader: tuple[str, str]) -> list[str]:
    """``CREATE USER`` for the writer and the reader, each ``(name, password)``.

    The statements hold the passwords: never log them. Raises :class:`InfluxUserError`
    for a name or password that cannot be a user's. Privileges are set apart, by
    :func:`grant_statements`."""
    _check_pair(writer[0], reader[0])
    return [
        f"CREATE USER {quote_ident(name)} WITH PASSWORD {quote_string(_check_password(name, password))}"
        for name, password in (writer, reader)
    ]


def grant_statements(database: str, writer: str, reader: str) -> list[str]:
    """The InfluxQL that leaves ``writer`` with WRITE only and ``reader`` with READ only on
    ``database``, and neither an admin.

    On 1.x a GRANT on a database replaces the user's privilege there (READ then WRITE
    leaves WRITE), and ``REVOKE ALL PRIVILEGES FROM <user>`` takes away the admin
    privilege only: so running these again after any earlier grant gives the same
    result. Privileges on other databases are left alone."""
    _check_pair(writer, reader)
    if not database:
        raise InfluxUserError("database ''", "empty")
    db = quote_ident(database)
    return [
        f"REVOKE ALL PRIVILEGES FROM {quote_ident(writer)}",
        f"GRANT WRITE ON {db} TO {quote_ident(writer)}",
        f"REVOKE ALL PRIVILEGES FROM {quote_ident(reader)}",
        f"GRANT READ ON {db} TO {quote_ident(reader)}",
    ]


def apply_users(admin: InfluxSettings, database: str, writer: tuple[str, str], reader: tuple[str, str]) -> None:
    """Make the writer and the reader on InfluxDB 1.x, as ``admin`` (settings whose
    credential is an admin's); each ``(name, password)``.

    Idempotent: a user that exists gets its password set (``SET PASSWORD FOR``) and its
    privileges set again, so a second run changes passwords and grants rather than
    failing. The database must exist (``garden hub init``)."""
    creates = user_statements(writer, reader)  # checks names and passwords before anything is sent
    grants = grant_statements(database, writer[0], reader[0])
    influx = Influx(admin)
    try:
        server = influx.ping()
        if server.major >= 2:
            raise InfluxError(
                f"InfluxDB {server.version} has tokens, not users and GRANTs: its scoped tokens come from "
                "deploy/influxdb/init-influxdb.sh (docs/deploy.md, 'InfluxDB credentials')"
            )
        admin_name = admin.credential(read=True).username
        for name in (writer[0], reader[0]):
            if name == admin_name:
                raise InfluxUserError(f"user {name!r}", "is the admin we log in as: the writer and the reader "
                                      "must be users of their own")  # fmt: skip
        databases = {str(row[0]) for s in influx.query("SHOW DATABASES", database="") for row in s.values}
        if database not in databases:
            raise InfluxMissingDatabase(database)
        existing = {str(row[0]) for s in influx.query("SHOW USERS", database="") for row in s.values}
        for (name, password), create in zip((writer, reader), creates, strict=True):
            if name in existing:
                statement = f"SET PASSWORD FOR {quote_ident(name)} = {quote_string(password)}"
            else:
                statement = create
            try:
                influx.execute(statement)
            except InfluxQueryError as err:  # its .query holds the password: leave it behind
                raise InfluxUserError(f"user {name!r}", f"InfluxDB refused it: {err.problem}") from None
        for statement in grants:
            influx.execute(statement)
    except InfluxAuthError as err:
        raise as_admin(err, admin) from None
    finally:
        influx.close()


def as_admin(err: InfluxAuthError, admin: InfluxSettings) -> InfluxAuthError:
    """``err`` (raised with settings whose only credential is the admin's) naming the admin's
    variables, not the hub's."""
    credential = admin.credential(read=True)
    who = Credential("admin", credential.token, credential.username, credential.password)
    return InfluxAuthError(admin.url, err.problem, who, forbidden=err.forbidden, action="do this")


# ------------------------------------------------------------------- the probes

YES, NO, REFUSED, MISSING, UNKNOWN = "yes", "no", "refused", "missing", "unknown"


@dataclass(frozen=True, slots=True)
class Answer:
    """What a probe found: ``yes`` / ``no`` (may / may not), ``refused`` (401: the
    credential itself is wrong), ``missing`` (no such database), ``unknown``."""

    verdict: str
    detail: str = ""
    no_admin_yet: bool = False  # 1.x: auth on, but nobody has made the first admin


def _error_of(text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    return text.strip()[:200]


def _results_error(text: str) -> str | None:
    """The first error inside a 200 answer's results, if any."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    for result in doc.get("results", []) if isinstance(doc, dict) else []:
        if isinstance(result, dict) and isinstance(result.get("error"), str):
            return str(result["error"])
    return None


def _query_answer(status: int, text: str) -> Answer:
    if status == 401:
        return Answer(REFUSED, _error_of(text))
    if status == 403:
        refusal = _error_of(text)
        return Answer(NO, refusal, no_admin_yet="create admin user first" in refusal)
    if status == 200:
        error = _results_error(text)
        if error is None:
            return Answer(YES)
        if "database not found" in error:
            return Answer(MISSING, error)
        return Answer(NO if is_refusal(error) else UNKNOWN, error)
    if status == 404 and "not found" in text:
        return Answer(MISSING, _error_of(text))
    return Answer(UNKNOWN, f"HTTP {status}: {_error_of(text)}")


def can_read(influx: Influx, credential: Credential) -> Answer:
    """The read probe: ``SHOW MEASUREMENTS LIMIT 1`` on the database."""
    s = influx.settings
    fields = {"q": "SHOW MEASUREMENTS LIMIT 1", "db": s.database}
    return _query_answer(*influx.probe("POST", "/query", fields, credential=credential))


def can_write(influx: Influx, credential: Credential) -> Answer:
    """The write probe: an empty body to ``/write``, which stores nothing."""
    s = influx.settings
    params = {"db": s.database} | ({"rp": s.retention_policy} if s.retention_policy else {})
    status, text = influx.probe("POST", "/write", params, body=b"", credential=credential)
    if 200 <= status < 300:
        return Answer(YES)
    if status == 400 and "requires points" in text:  # 2.0: the token passed before the body was read
        return Answer(YES)
    if status == 401:
        return Answer(REFUSED, _error_of(text))
    if status == 403:
        return Answer(NO, _error_of(text))
    if status == 404:
        return Answer(MISSING, _error_of(text))
    return Answer(UNKNOWN, f"HTTP {status}: {_error_of(text)}")


def is_admin(influx: Influx, credential: Credential, server: ServerInfo) -> Answer:
    """The admin probe: ``SHOW USERS`` on 1.x; the tokens it can see on 2.x and newer."""
    if server.major < 2:
        return _query_answer(*influx.probe("POST", "/query", {"q": "SHOW USERS"}, credential=credential))
    status, text = influx.probe("GET", "/api/v2/authorizations", credential=credential)
    if status == 401:
        return Answer(REFUSED, _error_of(text))
    if status == 403:
        return Answer(NO, _error_of(text))
    if status == 200:
        try:
            seen: Any = json.loads(text).get("authorizations")
        except (ValueError, AttributeError):
            return Answer(UNKNOWN, "an answer that is not JSON")
        return Answer(YES, f"it sees {len(seen)} tokens") if seen else Answer(NO)
    return Answer(UNKNOWN, f"HTTP {status}: {_error_of(text)}")


# -------------------------------------------------------------------- the check


def check_scopes(settings: InfluxSettings) -> list[Row]:
    """What each credential of ``settings`` may do on its database, as
    ``(status, subject, message)`` rows: status ``ok``, ``warn`` or ``fail``; subject
    ``influxdb``, ``anonymous``, ``write credential`` or ``read credential``.

    Fails: anonymous requests accepted (or auth on with no admin yet); a credential
    InfluxDB refuses; a write credential that may not write; a read credential that
    may not read, or may write; either an admin; a write credential that may also
    read when a read credential is set. Warns: a write credential that may also
    read when no read credential is set (it must then, as queries use it), no write
    credential (fine on a machine that only reads), an answer it cannot tell. While
    InfluxDB takes anonymous requests it checks no credential, so theirs are not probed
    (a warning each). The probes are in the module docstring."""
    influx = Influx(settings)
    try:
        try:
            server = influx.ping()
        except InfluxError as err:
            return [(FAIL, "influxdb", str(err))]
        rows = [_anonymous(influx)]
        write = settings.credential(read=False)
        separate_reader = settings.has_read_credential
        if rows[0][0] == FAIL:  # auth off (or no admin yet): no credential's scope means anything
            for subject, credential in (
                ("write credential", write),
                ("read credential", settings.credential(read=True)),
            ):
                if credential.is_set and (subject == "write credential" or separate_reader):
                    rows.append((WARN, subject, f"{credential.kind()}: not checked, as InfluxDB does not check "
                                 "credentials while it takes anonymous requests"))  # fmt: skip
            return rows
        if write.is_set:
            rows += _write_rows(influx, write, server, separate_reader)
        else:
            rows.append((WARN, "write credential", "none set: fine where nothing writes (the CLI, Grafana); "
                         f"the hub needs one: {_vars(write)}"))  # fmt: skip
        if separate_reader:
            rows += _read_rows(influx, settings.credential(read=True), server)
        return rows
    finally:
        influx.close()


def _vars(credential: Credential) -> str:
    return credential.env_hint().split(", or set")[0]


def _anonymous(influx: Influx) -> Row:
    read, write = can_read(influx, ANONYMOUS), can_write(influx, ANONYMOUS)
    if read.no_admin_yet:
        return (FAIL, "anonymous", "InfluxDB has auth on but no admin user yet: anyone who reaches it can make "
                "themselves admin. Make one now (CREATE USER ... WITH ALL PRIVILEGES; docs/deploy.md, "
                "'InfluxDB 1.x: two users')")  # fmt: skip
    if YES in (read.verdict, write.verdict):
        may = " and ".join(what for what, a in (("read", read), ("write", write)) if a.verdict == YES)
        return (FAIL, "anonymous", f"InfluxDB accepts anonymous requests: anyone who reaches {influx.settings.url} "
                f"may {may}. Turn auth on ([http] auth-enabled = true in influxdb.conf, after making an admin "
                "user) and give the hub and the readers users of their own (`garden influx users`)")  # fmt: skip
    return (OK, "anonymous", "InfluxDB refuses anonymous requests")


def _refused(subject: str, credential: Credential, answer: Answer) -> Row:
    return (FAIL, subject, f"{credential.kind()} is refused ({answer.detail}): check {_vars(credential)}")


def _write_rows(influx: Influx, write: Credential, server: ServerInfo, separate_reader: bool) -> list[Row]:
    subject, who, db = "write credential", write.kind(), influx.settings.database
    wrote = can_write(influx, write)
    if wrote.verdict == REFUSED:
        return [_refused(subject, write, wrote)]
    rows: list[Row] = []
    if wrote.verdict == YES:
        rows.append((OK, subject, f"{who} may write to {db}"))
    elif wrote.verdict == NO:
        rows.append((FAIL, subject, f"{who} may not write to {db} ({wrote.detail}): the hub cannot store "
                     f"readings. 1.x: GRANT WRITE ON {quote_ident(db)} (or `garden influx users`); "
                     "2.x: deploy/influxdb/init-influxdb.sh"))  # fmt: skip
    elif wrote.verdict == MISSING:
        rows.append((WARN, subject, f"no database {db!r} to write to ({wrote.detail}): `garden hub init`"))
    else:
        rows.append((WARN, subject, f"cannot tell whether {who} may write ({wrote.detail})"))
    read = can_read(influx, write)
    if read.verdict == MISSING and wrote.verdict == YES:
        read = Answer(NO, read.detail)  # the database is there: it is hidden from this credential
    if read.verdict == YES and separate_reader:
        rows.append((FAIL, subject, f"{who} may also read {db}: too much scope. It only writes (queries use "
                     "the read credential); 1.x: GRANT WRITE, not ALL (`garden influx users` does it)"))  # fmt: skip
    elif read.verdict == YES:
        rows.append((WARN, subject, f"{who} may also read {db}, and must: queries use it, as no read credential "
                     f"is set. Set one ({READ_HINT}) and make this one write-only"))  # fmt: skip
    elif read.verdict == NO and not separate_reader:
        rows.append((FAIL, subject, f"{who} may not read {db}, and queries use it, as no read credential is set: "
                     f"the watch's warm-up, the rollups and the CLI fail. Set one ({READ_HINT})"))  # fmt: skip
    elif read.verdict == NO:
        rows.append((OK, subject, f"{who} may not read {db}"))
    else:
        rows.append((WARN, subject, f"cannot tell whether {who} may read ({read.detail})"))
    rows.append(_admin_row(influx, subject, write, server))
    return rows


READ_HINT = "GARDEN_INFLUX_READ_TOKEN, or GARDEN_INFLUX_READ_USERNAME and GARDEN_INFLUX_READ_PASSWORD"


def _read_rows(influx: Influx, read: Credential, server: ServerInfo) -> list[Row]:
    subject, who, db = "read credential", read.kind(), influx.settings.database
    answer = can_read(influx, read)
    if answer.verdict == REFUSED:
        return [_refused(subject, read, answer)]
    rows: list[Row] = []
    if answer.verdict == YES:
        rows.append((OK, subject, f"{who} may read {db}"))
    elif answer.verdict == NO:
        rows.append((FAIL, subject, f"{who} may not read {db} ({answer.detail}): the watch's warm-up, the rollups "
                     f"and the CLI fail. 1.x: GRANT READ ON {quote_ident(db)} (or `garden influx users`)"))  # fmt: skip
    elif answer.verdict == MISSING:
        rows.append((WARN, subject, f"no database {db!r} to read ({answer.detail}): `garden hub init`"))
    else:
        rows.append((WARN, subject, f"cannot tell whether {who} may read ({answer.detail})"))
    wrote = can_write(influx, read)
    if wrote.verdict == YES:
        rows.append((FAIL, subject, f"{who} may also write to {db}: too much scope. What Grafana and the CLI "
                     "use must not change the garden's data; 1.x: GRANT READ, not ALL"))  # fmt: skip
    elif wrote.verdict == NO:
        rows.append((OK, subject, f"{who} may not write to {db}"))
    else:
        rows.append((WARN, subject, f"cannot tell whether {who} may write ({wrote.detail})"))
    rows.append(_admin_row(influx, subject, read, server))
    return rows


def _admin_row(influx: Influx, subject: str, credential: Credential, server: ServerInfo) -> Row:
    answer = is_admin(influx, credential, server)
    who = credential.kind()
    if answer.verdict == YES:
        extra = f" ({answer.detail})" if answer.detail else ""
        return (FAIL, subject, f"{who} is an InfluxDB admin{extra}: too much scope (it could drop the database "
                "or make users); give it a user or token of its own")  # fmt: skip
    if answer.verdict == NO:
        return (OK, subject, f"{who} is not an admin")
    return (WARN, subject, f"cannot tell whether {who} is an admin ({answer.detail})")

"""Creating the InfluxDB side of docs/schema.md: database and retention policies.

Administrative InfluxQL with fixed names only; no user input.
"""

from __future__ import annotations

from garden.influx import Influx, InfluxRejected
from garden.points import line
from garden.readings import HOURLY_MAX_S, RAW_MAX_S

RETENTION = (("raw", "400d", True), ("hourly", "1826d", False), ("daily", "INF", False))

# The dashboards' hidden variable $rp picks the retention policy by the time range
# (docs/dashboards.md) from these points: one per policy, in ``daily`` (kept
# forever), at a fixed time so that writing them again overwrites them. The
# thresholds are `garden readings`' (garden/readings.py), in milliseconds; a range
# of R ms reads the policy whose above_ms < R <= upto_ms.
RP_CHOICE = "rp_choice"
RP_CHOICE_POLICY = "daily"
RP_CHOICE_TIME_MS = 0
RP_CHOICES = (
    ("raw", 0, RAW_MAX_S * 1000),
    ("hourly", RAW_MAX_S * 1000, HOURLY_MAX_S * 1000),
    ("daily", HOURLY_MAX_S * 1000, 2**63 - 1),
)


def rp_choice_lines() -> list[str]:
    """The ``rp_choice`` points, as line protocol (ms)."""
    return [
        line(RP_CHOICE, {"idx": str(i)}, {"rp": rp, "above_ms": above, "upto_ms": upto}, RP_CHOICE_TIME_MS)
        for i, (rp, above, upto) in enumerate(RP_CHOICES)
    ]


def write_rp_choice(influx: Influx) -> None:
    """Write (or overwrite) the ``rp_choice`` points in ``daily``."""
    influx.write_lines(rp_choice_lines(), retention_policy=RP_CHOICE_POLICY)


def ensure_schema(influx: Influx) -> list[str]:
    """Create what is missing; return what was done. On 2.x/3.x, only check."""
    server = influx.ping()
    db = influx.settings.database
    if server.major >= 2:
        # Buckets, tokens and DBRP mappings are made by the InfluxDB 2.x setup
        # (deploy/influxdb); here we only check that InfluxQL can see the data.
        influx.query("SHOW MEASUREMENTS LIMIT 1")
        done = [f"InfluxDB {server.version}: bucket and DBRP mapping for {db!r} answer InfluxQL"]
        try:
            write_rp_choice(influx)
        except InfluxRejected as err:  # e.g. a daily bucket with a finite retention refuses time 0
            done.append(f"dashboards' {RP_CHOICE} not written ({err}): their graphs read raw")
        return done
    if not db.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"database name {db!r} must be letters, digits, '-' and '_'")
    done = []
    existing = {row[0] for s in influx.query("SHOW DATABASES", database="") for row in s.values}
    if db not in existing:
        influx.execute(f'CREATE DATABASE "{db}"')
        done.append(f"created database {db}")
    policies = {row[0] for s in influx.query(f'SHOW RETENTION POLICIES ON "{db}"', database="") for row in s.values}
    for name, duration, default in RETENTION:
        verb = "ALTER" if name in policies else "CREATE"
        statement = f'{verb} RETENTION POLICY "{name}" ON "{db}" DURATION {duration} REPLICATION 1'
        if default:
            statement += " DEFAULT"
        influx.execute(statement)
        if verb == "CREATE":
            done.append(f"created retention policy {name} ({duration}{', default' if default else ''})")
    write_rp_choice(influx)  # idempotent: the same points at the same time
    return done

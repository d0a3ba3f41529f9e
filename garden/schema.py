"""Creating the InfluxDB side of docs/schema.md: database and retention policies.

Administrative InfluxQL with fixed names only; no user input.
"""

from __future__ import annotations

from garden.influx import Influx

RETENTION = (("raw", "400d", True), ("hourly", "1826d", False), ("daily", "INF", False))


def ensure_schema(influx: Influx) -> list[str]:
    """Create what is missing; return what was done. On 2.x/3.x, only check."""
    server = influx.ping()
    db = influx.settings.database
    if server.major >= 2:
        # Buckets, tokens and DBRP mappings are made by the InfluxDB 2.x setup
        # (deploy/influxdb); here we only check that InfluxQL can see the data.
        influx.query("SHOW MEASUREMENTS LIMIT 1")
        return [f"InfluxDB {server.version}: bucket and DBRP mapping for {db!r} answer InfluxQL"]
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
    return done

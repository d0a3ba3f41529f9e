#!/bin/sh
# Entrypoint of the grafana service in docker-compose.yml. The datasource
# provisioning (dashboards/provisioning/datasources/garden.yaml) reads the
# InfluxDB token from GARDEN_GRAFANA_INFLUX_TOKEN; the token itself is made by
# deploy/influxdb/init-influxdb.sh into a file. Export the file's content (unless
# the variable is already set), then hand over to Grafana's own entrypoint.
set -eu
if [ -z "${GARDEN_GRAFANA_INFLUX_TOKEN:-}" ] && [ -n "${GARDEN_GRAFANA_INFLUX_TOKEN_FILE:-}" ]; then
    if [ ! -r "$GARDEN_GRAFANA_INFLUX_TOKEN_FILE" ]; then
        echo "grafana entrypoint: cannot read $GARDEN_GRAFANA_INFLUX_TOKEN_FILE (did influxdb-init run?)" >&2
        exit 1
    fi
    GARDEN_GRAFANA_INFLUX_TOKEN=$(tr -d ' \t\r\n' <"$GARDEN_GRAFANA_INFLUX_TOKEN_FILE")
    export GARDEN_GRAFANA_INFLUX_TOKEN
fi
exec "${GRAFANA_RUN:-/run.sh}" "$@"

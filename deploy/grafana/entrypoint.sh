#!/bin/sh
# Entrypoint of the grafana service in docker-compose.yml. The datasource
# provisioning (dashboards/provisioning/datasources/) reads the InfluxDB token
# (garden.yaml, 2.x) from GARDEN_GRAFANA_INFLUX_TOKEN, or the read-only user's
# password (garden-influx1.yaml.example, 1.x) from GARDEN_GRAFANA_INFLUX_PASSWORD.
# Grafana's provisioning reads only variables, so export each from its *_FILE
# (unless the variable is already set): the token file is made by
# deploy/influxdb/init-influxdb.sh, the password file by `garden secure init`.
# Then hand over to Grafana's own entrypoint.
set -eu
if [ -z "${GARDEN_GRAFANA_INFLUX_TOKEN:-}" ] && [ -n "${GARDEN_GRAFANA_INFLUX_TOKEN_FILE:-}" ]; then
    if [ ! -r "$GARDEN_GRAFANA_INFLUX_TOKEN_FILE" ]; then
        echo "grafana entrypoint: cannot read $GARDEN_GRAFANA_INFLUX_TOKEN_FILE (did influxdb-init run?)" >&2
        exit 1
    fi
    GARDEN_GRAFANA_INFLUX_TOKEN=$(tr -d ' \t\r\n' <"$GARDEN_GRAFANA_INFLUX_TOKEN_FILE")
    export GARDEN_GRAFANA_INFLUX_TOKEN
fi
if [ -z "${GARDEN_GRAFANA_INFLUX_PASSWORD:-}" ] && [ -n "${GARDEN_GRAFANA_INFLUX_PASSWORD_FILE:-}" ]; then
    if [ ! -r "$GARDEN_GRAFANA_INFLUX_PASSWORD_FILE" ]; then
        echo "grafana entrypoint: cannot read $GARDEN_GRAFANA_INFLUX_PASSWORD_FILE (is it owned by Grafana's user?)" >&2
        exit 1
    fi
    GARDEN_GRAFANA_INFLUX_PASSWORD=$(tr -d '\r\n' <"$GARDEN_GRAFANA_INFLUX_PASSWORD_FILE")
    export GARDEN_GRAFANA_INFLUX_PASSWORD
fi
exec "${GRAFANA_RUN:-/run.sh}" "$@"

#!/usr/bin/env bash
# The main job, in one command: set up what is missing, start Mosquitto and
# InfluxDB on loopback (unless they already answer), then the hub, the bridge
# (with three simulated nodes when no sensor node is plugged in) and a live
# `garden status`. Ctrl-C stops everything. All data stays in .run/, and the
# next run picks it up.
#
# Extra arguments go to `garden up` (see `garden up --help`), e.g. --speed 600.
# GARDEN_MQTT_PORT and GARDEN_INFLUX_PORT choose other ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

MQTT_PORT="${GARDEN_MQTT_PORT:-1883}"
INFLUX_PORT="${GARDEN_INFLUX_PORT:-8086}"
RUN="$PWD/.run"
LOGS="$RUN/logs"
mkdir -p "$RUN/mosquitto" "$RUN/influxdb" "$LOGS"
pids=()
server_pids=()

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 100); do answers "$1" && return 0; sleep 0.1; done
  echo "run: nothing answers on port $1; see $LOGS" >&2
  return 1
}
stop_all() {
  trap - INT TERM EXIT
  echo
  echo "run: stopping..."
  # The garden's own processes first, so they can finish their work while the
  # servers are still up; then the servers.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "run: stopped. Data is in $RUN; logs in $LOGS."
}
trap stop_all INT TERM EXIT

if answers "$MQTT_PORT"; then
  echo "run: using the MQTT broker already on 127.0.0.1:$MQTT_PORT"
else
  cat > "$RUN/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
user $(id -un)
persistence true
persistence_location $RUN/mosquitto/
autosave_interval 10
max_queued_messages 1000000
log_dest file $LOGS/mosquitto.log
CONF
  # setsid: a Ctrl-C in the terminal reaches the whole process group; the
  # servers must outlive the hub and the bridge, which stop first.
  setsid "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$RUN/mosquitto.conf" &
  server_pids+=($!)
  wait_port "$MQTT_PORT"
  echo "run: started Mosquitto on 127.0.0.1:$MQTT_PORT"
fi

if answers "$INFLUX_PORT"; then
  echo "run: using the InfluxDB already on 127.0.0.1:$INFLUX_PORT"
else
  cat > "$RUN/influxdb.conf" <<CONF
reporting-enabled = false
bind-address = "127.0.0.1:$((INFLUX_PORT + 2))"
[meta]
  dir = "$RUN/influxdb/meta"
[data]
  dir = "$RUN/influxdb/data"
  wal-dir = "$RUN/influxdb/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$INFLUX_PORT"
  log-enabled = false
[logging]
  level = "warn"
CONF
  setsid "$(command -v influxd || echo /usr/bin/influxd)" -config "$RUN/influxdb.conf" > "$LOGS/influxd.log" 2>&1 &
  server_pids+=($!)
  wait_port "$INFLUX_PORT"
  echo "run: started InfluxDB on 127.0.0.1:$INFLUX_PORT"
fi

export GARDEN_DATA_DIR="${GARDEN_DATA_DIR:-$RUN/data}"
export GARDEN_MQTT_URL="mqtt://127.0.0.1:$MQTT_PORT"
export GARDEN_INFLUX_URL="http://127.0.0.1:$INFLUX_PORT"
GARDEN=.venv/bin/garden

$GARDEN hub init
$GARDEN hub run > "$LOGS/hub.log" 2>&1 &
pids+=($!)
$GARDEN up "$@" > "$LOGS/bridge.log" 2>&1 &
pids+=($!)
echo "run: hub and bridge running (logs in $LOGS). Grafana dashboards: see docs/dashboards.md."
echo "run: live status below; Ctrl-C stops everything."
sleep 3
$GARDEN status --watch 5 || true

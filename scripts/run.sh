#!/usr/bin/env bash
# The main job: set up (if needed), start a local Mosquitto unless one answers
# on the configured port, and run the garden's pipeline. With no sensor nodes
# plugged in (/dev/serial/by-id empty), three simulated nodes stand in.
# Extra arguments go to `garden up` (see `garden up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

PORT="${GARDEN_MQTT_PORT:-1883}"
RUN_DIR="$PWD/.run"
mkdir -p "$RUN_DIR/mosquitto"
if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  cat > "$RUN_DIR/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
user $(id -un)
persistence true
persistence_location $RUN_DIR/mosquitto/
autosave_interval 10
max_queued_messages 100000
log_dest file $RUN_DIR/mosquitto.log
CONF
  MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
  "$MOSQUITTO" -c "$RUN_DIR/mosquitto.conf" &
  MOSQ_PID=$!
  trap 'kill $MOSQ_PID 2>/dev/null || true' EXIT
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  echo "run: started Mosquitto on 127.0.0.1:$PORT (log: $RUN_DIR/mosquitto.log)"
else
  echo "run: using the MQTT broker already on 127.0.0.1:$PORT"
fi
export GARDEN_DATA_DIR="${GARDEN_DATA_DIR:-$RUN_DIR/data}"
.venv/bin/garden up --mqtt "mqtt://127.0.0.1:$PORT" "$@"

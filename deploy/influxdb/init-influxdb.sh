#!/usr/bin/env bash
# The InfluxDB 2.x side of docs/schema.md, with the influx CLI only (no Flux).
#
# Run by the one-shot `influxdb-init` service of docker-compose.yml after the
# influxdb service is healthy (its own DOCKER_INFLUXDB_INIT_* setup has made the
# org, the admin user and token, and the raw bucket). Safe to run again: it only
# adds what is missing. It makes:
#
#   buckets        <bucket> (raw, made by the setup), <bucket>/hourly, <bucket>/daily
#   DBRP mappings  database <database>, RPs raw (default), hourly, daily, so that
#                  InfluxQL (the hub, Grafana) finds the buckets
#   tokens         on those buckets, each in a file of $GARDEN_TOKENS_DIR readable
#                  only by the uid of the container that reads it:
#                    hub.token       the hub's writes: write-only (GARDEN_INFLUX_TOKEN_FILE)
#                    hub-read.token  the hub's queries (watch warm-up, rollups): read-only
#                                    (GARDEN_INFLUX_READ_TOKEN_FILE)
#                    grafana.token   Grafana's: read-only
#
# A token file that is lost, or whose permissions no longer match, is replaced
# by a new token (the old authorization is deleted). Native installs can run it
# too: see docs/deploy.md.
#
# Environment (defaults in brackets): INFLUX_HOST [http://influxdb:8086];
# INFLUX_TOKEN, or GARDEN_INFLUX_ADMIN_TOKEN_FILE naming a file that holds it;
# GARDEN_INFLUX_ORG [garden], GARDEN_INFLUX_BUCKET [garden],
# GARDEN_INFLUX_DATABASE [garden], GARDEN_INFLUX_ADMIN_USER [admin],
# GARDEN_INFLUX_RETENTION [400d], GARDEN_INFLUX_HOURLY_RETENTION [1826d],
# GARDEN_INFLUX_DAILY_RETENTION [0 = forever], GARDEN_TOKENS_DIR [/garden-tokens],
# GARDEN_HUB_UID [10001], GARDEN_GRAFANA_UID [472],
# GARDEN_INFLUX_WAIT_S [60] (how long to wait for InfluxDB to answer).
# tests/deploy/test_influx_init.py runs it against a stand-in influx CLI.
set -euo pipefail

die() {
    echo "influxdb-init: $*" >&2
    exit 1
}
say() { echo "influxdb-init: $*"; }

: "${INFLUX_HOST:=http://influxdb:8086}"
org=${GARDEN_INFLUX_ORG:-garden}
bucket=${GARDEN_INFLUX_BUCKET:-garden}
database=${GARDEN_INFLUX_DATABASE:-garden}
raw_retention=${GARDEN_INFLUX_RETENTION:-400d}
hourly_retention=${GARDEN_INFLUX_HOURLY_RETENTION:-1826d}
daily_retention=${GARDEN_INFLUX_DAILY_RETENTION:-0}
admin_user=${GARDEN_INFLUX_ADMIN_USER:-admin}
tokens_dir=${GARDEN_TOKENS_DIR:-/garden-tokens}
hub_uid=${GARDEN_HUB_UID:-10001}
grafana_uid=${GARDEN_GRAFANA_UID:-472}
if [ -n "${GARDEN_HUB_INFLUX_READ:-}" ]; then
    # Before the hub had two tokens, this gave its one token read rights as well.
    say "GARDEN_HUB_INFLUX_READ is no longer used: the hub writes with hub.token (write-only) and reads with hub-read.token (read-only)"
fi

if [ -z "${INFLUX_TOKEN:-}" ]; then
    [ -n "${GARDEN_INFLUX_ADMIN_TOKEN_FILE:-}" ] || die "set INFLUX_TOKEN or GARDEN_INFLUX_ADMIN_TOKEN_FILE"
    [ -r "$GARDEN_INFLUX_ADMIN_TOKEN_FILE" ] || die "cannot read $GARDEN_INFLUX_ADMIN_TOKEN_FILE"
    INFLUX_TOKEN=$(tr -d ' \t\r\n' <"$GARDEN_INFLUX_ADMIN_TOKEN_FILE")
fi
export INFLUX_HOST INFLUX_TOKEN
# No CLI config file: host and token come from the environment only. (The CLI
# has read either name over its versions.)
INFLUX_CONFIGS_PATH=${INFLUX_CONFIGS_PATH_OVERRIDE:-/tmp/influx-configs}
INFLUX_CLI_CONFIGS_PATH=$INFLUX_CONFIGS_PATH
export INFLUX_CONFIGS_PATH INFLUX_CLI_CONFIGS_PATH

for _ in $(seq 1 "${GARDEN_INFLUX_WAIT_S:-60}"); do
    influx ping >/dev/null 2>&1 && break
    sleep 1
done
influx ping >/dev/null || die "InfluxDB at $INFLUX_HOST does not answer"

# --- buckets ---------------------------------------------------------------------
bucket_id() {
    influx bucket list --org "$org" --name "$1" --hide-headers 2>/dev/null | cut -f 1 | head -n 1 || true
}

ensure_bucket() { # name retention -> prints the bucket id
    local name=$1 retention=$2 id
    id=$(bucket_id "$name")
    if [ -z "$id" ]; then
        influx bucket create --org "$org" --name "$name" --retention "$retention" \
            --description "Garden Commons ($name)" --hide-headers >/dev/null
        id=$(bucket_id "$name")
        [ -n "$id" ] || die "bucket $name was not created"
        say "created bucket $name (retention $retention)" >&2
    fi
    echo "$id"
}

raw_id=$(ensure_bucket "$bucket" "$raw_retention")
hourly_id=$(ensure_bucket "$bucket/hourly" "$hourly_retention")
daily_id=$(ensure_bucket "$bucket/daily" "$daily_retention")

# --- DBRP mappings (InfluxQL's database/retention policy -> bucket) ---------------
ensure_dbrp() { # bucket-id rp [--default]
    local id=$1 rp=$2
    shift 2
    if [ -n "$(influx v1 dbrp list --org "$org" --bucket-id "$id" --hide-headers 2>/dev/null || true)" ]; then
        return
    fi
    influx v1 dbrp create --org "$org" --db "$database" --rp "$rp" --bucket-id "$id" "$@" --hide-headers >/dev/null
    say "mapped database $database, retention policy $rp${1:+ (default)} to bucket $id"
}

ensure_dbrp "$raw_id" raw --default
ensure_dbrp "$hourly_id" hourly
ensure_dbrp "$daily_id" daily

# --- scoped tokens -------------------------------------------------------------------
# `influx auth list --json`: objects whose fields come one per line, in the order
# id, description, token, ... Print "id token" for the given description.
auths_with_description() {
    influx auth list --org "$org" --json | awk -F'"' -v want="$1" '
        $2 == "id" { id = $4 }
        $2 == "description" { d = $4 }
        $2 == "token" { if (d == want) print id, $4; d = "" }'
}

token_of_json() {
    awk -F'"' '$2 == "token" { print $4; exit }'
}

ensure_token() { # description file uid permission-flags...
    local description=$1 file=$2 uid=$3
    shift 3
    local spec="$*" current="" id token
    mkdir -p "$tokens_dir"
    chmod 0755 "$tokens_dir"
    [ -s "$file" ] && current=$(cat "$file")
    if [ -n "$current" ] && [ "$(cat "$file.spec" 2>/dev/null || true)" = "$spec" ] &&
        auths_with_description "$description" | awk -v t="$current" '$2 == t { found = 1 } END { exit !found }'; then
        chown "$uid" "$file"
        chmod 0400 "$file"
        return
    fi
    while read -r id token; do
        [ -n "$id" ] || continue
        influx auth delete --id "$id" --hide-headers >/dev/null
        say "deleted stale token $description ($id)"
    done < <(auths_with_description "$description")
    token=$(influx auth create --org "$org" --user "$admin_user" --description "$description" "$@" --json | token_of_json)
    [ -n "$token" ] || die "could not create token $description"
    (
        umask 077
        printf '%s\n' "$token" >"$file.new"
    )
    chown "$uid" "$file.new"
    chmod 0400 "$file.new"
    mv -f "$file.new" "$file"
    printf '%s\n' "$spec" >"$file.spec"
    say "created token $description -> $file (${spec})"
}

# Each token does one thing: the hub's two are used by one process, but a leaked
# write token cannot read the garden's history, and a leaked read token (like
# Grafana's) cannot change it. A hub.token from before, which could read too, no
# longer matches its spec and is replaced by a write-only one.
write_flags=(--write-bucket "$raw_id" --write-bucket "$hourly_id" --write-bucket "$daily_id")
read_flags=(--read-bucket "$raw_id" --read-bucket "$hourly_id" --read-bucket "$daily_id")
ensure_token garden-hub "$tokens_dir/hub.token" "$hub_uid" "${write_flags[@]}"
ensure_token garden-hub-read "$tokens_dir/hub-read.token" "$hub_uid" "${read_flags[@]}"
ensure_token garden-grafana "$tokens_dir/grafana.token" "$grafana_uid" "${read_flags[@]}"

say "ready: org $org, buckets $bucket{,/hourly,/daily}, database $database (raw default)"

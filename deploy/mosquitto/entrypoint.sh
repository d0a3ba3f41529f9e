#!/bin/sh
# Entrypoint of the mosquitto service in docker-compose.yml (eclipse-mosquitto
# image, busybox sh). Builds the broker's password file from the same plaintext
# secret files the bridge and the hub read (GARDEN_MQTT_PASSWORD_FILE), so each
# password lives in one place, then runs the broker.
#
#   GARDEN_MQTT_USERS   "name=/run/secrets/file ..." one entry per MQTT user
#   GARDEN_MQTT_AUTH_DIR  where passwd, acl and the health password go
#                         (default /mosquitto/auth, a tmpfs: hashes are never kept)
#   GARDEN_MQTT_ACL     the garden's ACL (compose: /run/secrets/mosquitto_acl, made by
#                       `garden secure init`); copied next to the password file
#   GARDEN_MOSQUITTO_CONF, GARDEN_MQTT_DATA_DIR, MOSQUITTO: paths
#
# It also makes a random password for the `health` user, which the container's
# healthcheck uses to read $SYS/broker/uptime. tests/deploy/test_compose.py runs
# this script with the real broker.
set -eu

auth_dir=${GARDEN_MQTT_AUTH_DIR:-/mosquitto/auth}
conf=${GARDEN_MOSQUITTO_CONF:-/garden/mosquitto.conf}
acl=${GARDEN_MQTT_ACL:-/garden/acl}
data_dir=${GARDEN_MQTT_DATA_DIR:-/mosquitto/data}
users=${GARDEN_MQTT_USERS:-}

fail() {
    echo "mosquitto entrypoint: $*" >&2
    exit 2
}

[ -n "$users" ] || fail "GARDEN_MQTT_USERS is empty: list 'user=/run/secrets/file' pairs"
[ -f "$conf" ] || fail "no broker config at $conf"
[ -f "$acl" ] || fail "no ACL file at $acl"

# Everything made from here on is private to its owner, the broker included (exec
# keeps the umask): the password file, the ACL copy, and the persistence file
# (mosquitto.db holds retained messages: claims, configs). Mosquitto 2.0 writes
# mosquitto.db as 0600 whatever the umask; the umask covers what else it creates.
umask 077
mkdir -p "$auth_dir"
plain="$auth_dir/passwd.new"
: >"$plain"
for entry in $users; do
    name=${entry%%=*}
    file=${entry#*=}
    case $name in
        "" | *[!A-Za-z0-9_-]*) fail "bad MQTT user name '$name' in GARDEN_MQTT_USERS" ;;
    esac
    [ "$name" != "$entry" ] || fail "'$entry' in GARDEN_MQTT_USERS has no '=/path/to/secret'"
    [ -r "$file" ] || fail "cannot read the password of MQTT user '$name' ($file)"
    # One line; surrounding blanks are stripped, as garden's read_secret does.
    password=$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$file")
    [ -n "$password" ] || fail "the password of MQTT user '$name' ($file) is empty"
    case $password in
        *"
"*) fail "the password of MQTT user '$name' ($file) has more than one line" ;;
    esac
    printf '%s:%s\n' "$name" "$password" >>"$plain"
done

# The healthcheck's own user: a fresh random password at every start.
health=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'health:%s\n' "$health" >>"$plain"
printf '%s\n' "$health" >"$auth_dir/health.password"

# Hash in place (never on a command line, so never in `ps`), then swap in.
mosquitto_passwd -U "$plain"
mv "$plain" "$auth_dir/passwd"
cp "$acl" "$auth_dir/acl.new"
mv "$auth_dir/acl.new" "$auth_dir/acl"

# The broker drops to the `mosquitto` user: it must own what it reads and writes.
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
    chown mosquitto:mosquitto "$auth_dir" "$auth_dir/passwd" "$auth_dir/acl"
    if [ -d "$data_dir" ]; then
        chown -R mosquitto:mosquitto "$data_dir"
    fi
fi
if [ -d "$data_dir" ]; then
    chmod 0700 "$data_dir"
    find "$data_dir" -maxdepth 1 -type f -name 'mosquitto.db*' -exec chmod 0600 {} +
fi

exec "${MOSQUITTO:-/usr/sbin/mosquitto}" -c "$conf"

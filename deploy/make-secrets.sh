#!/bin/sh
# Make the secret files docker-compose.yml reads, with random values, unless they
# exist already (an existing secret is never overwritten: InfluxDB and Grafana
# only read theirs on first start). Usage, from the repository root:
#
#   sh deploy/make-secrets.sh [DIR]      # DIR default: $GARDEN_SECRETS_DIR or ./deploy/secrets
#
# For hosts without Python. `garden secure init` does the same and more (one
# password per bridge, the ACL from your node lists, TLS; docs/security.md).
#
# The directory is 0700 and every file 0600. The containers read their files
# through compose's bind mounts as their own users, so a file read by a non-root
# container must belong to that container's uid: the hub's and the bridge's
# (10001), Grafana's (472), InfluxDB's (1000). Run as root, this script gives them
# away; otherwise it prints the `sudo chown` to run. Mosquitto's entrypoint and
# influxdb-init run as root and read any file. (docker-compose 1.29 ignores
# uid/gid/mode on file secrets.) docs/deploy.md, "Secrets", says which file is what.
#
# mosquitto_acl starts as a copy of deploy/mosquitto/acl, whose bridge `shed` owns
# the example nodes bed-1, bed-2, bed-3: edit it for your bridges and nodes.
set -eu

dir=${1:-${GARDEN_SECRETS_DIR:-./deploy/secrets}}
here=$(dirname "$0")
mkdir -p "$dir"
chmod 0700 "$dir"
umask 077

random() { # 32 letters and digits: safe in every config syntax and URL
    LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32
}

owner_of() { # the uid of the container that reads the file, if not root
    case $1 in
        mqtt_bridge_password | mqtt_hub_password) echo 10001 ;;
        grafana_admin_password) echo 472 ;;
        influxdb_admin_password | influxdb_admin_token) echo 1000 ;;
        *) echo "" ;;
    esac
}

chowns=""
for name in mqtt_bridge_password mqtt_hub_password mqtt_volunteer_password \
    influxdb_admin_password influxdb_admin_token grafana_admin_password mosquitto_acl; do
    file="$dir/$name"
    if [ -s "$file" ]; then
        chmod 0600 "$file"
        echo "kept    $file"
    else
        if [ "$name" = mosquitto_acl ]; then
            cp "$here/mosquitto/acl" "$file.new"
        else
            random >"$file.new" && echo >>"$file.new"
        fi
        chmod 0600 "$file.new"
        mv "$file.new" "$file"
        echo "created $file"
    fi
    uid=$(owner_of "$name")
    if [ -n "$uid" ]; then
        if [ "$(id -u)" = 0 ]; then
            chown "$uid" "$file"
        elif [ "$(stat -c %u "$file")" != "$uid" ]; then
            chowns="$chowns
sudo chown $uid $file"
        fi
    fi
done
echo "Volunteers' MQTT password (user volunteer) is in $dir/mqtt_volunteer_password."
echo "The broker's ACL is $dir/mosquitto_acl: list your bridges' nodes in it (docs/security.md)."
if [ -n "$chowns" ]; then
    echo "The containers read these files as their own users; give each to its reader:$chowns"
fi

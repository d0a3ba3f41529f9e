#!/bin/sh
# Make the secret files docker-compose.yml reads, with random values, unless they
# exist already (an existing secret is never overwritten: InfluxDB and Grafana
# only read theirs on first start). Usage, from the repository root:
#
#   sh deploy/make-secrets.sh [DIR]      # DIR default: $GARDEN_SECRETS_DIR or ./deploy/secrets
#
# The directory is private to you (0700). The files are 0644 because the
# containers read them as their own non-root users (hub 10001, grafana 472)
# through compose's bind mounts; the directory keeps other users of this
# machine out. docs/deploy.md, "Secrets", says which file is what.
set -eu

dir=${1:-${GARDEN_SECRETS_DIR:-./deploy/secrets}}
mkdir -p "$dir"
chmod 0700 "$dir"

random() { # 32 letters and digits: safe in every config syntax and URL
    LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32
}

for name in mqtt_bridge_password mqtt_hub_password mqtt_volunteer_password \
    influxdb_admin_password influxdb_admin_token grafana_admin_password; do
    file="$dir/$name"
    if [ -s "$file" ]; then
        echo "kept    $file"
        continue
    fi
    (umask 022 && random >"$file.new" && echo >>"$file.new")
    mv "$file.new" "$file"
    chmod 0644 "$file"
    echo "created $file"
done
echo "Volunteers' MQTT password (user volunteer) is in $dir/mqtt_volunteer_password."

# Garden Commons: one image for `garden bridge run` and `garden hub run`.
#
#   docker build -t garden-commons .
#   docker run --rm garden-commons --version
#
# docker-compose.yml builds it for the hub and bridge services (docs/deploy.md).
# Only the Python packages are copied into the build, never .venv or .git.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the project and its dependencies into a venv --------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/garden
WORKDIR /src
COPY pyproject.toml README.md ./
COPY firmware_bridge ./firmware_bridge
COPY garden ./garden
RUN /opt/garden/bin/pip install . \
    && /opt/garden/bin/garden --version

# --- run: the venv, a non-root user, nothing else ------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="garden-commons" \
      org.opencontainers.image.description="Garden Commons bridge (serial to MQTT) and hub (MQTT to InfluxDB)" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"

# uid/gid 10001: deploy/influxdb/init-influxdb.sh makes the hub's token file
# readable by this uid (GARDEN_HUB_UID). `dialout` (gid 20 on Debian, as on the
# host) owns the serial devices the bridge reads.
RUN groupadd --system --gid 10001 garden \
    && useradd --system --uid 10001 --gid garden --groups dialout \
        --home-dir /var/lib/garden --no-create-home --shell /usr/sbin/nologin garden \
    && install -d -o garden -g garden -m 0750 /var/lib/garden

COPY --from=build /opt/garden /opt/garden
COPY deploy/docker/healthcheck.py /opt/garden/healthcheck.py

ENV PATH=/opt/garden/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/garden \
    GARDEN_DATA_DIR=/var/lib/garden

# Spools (bridge-spool.sqlite3, hub-spool.sqlite3) and dead letters live here;
# docker-compose.yml mounts a named volume on it.
VOLUME ["/var/lib/garden"]
WORKDIR /var/lib/garden
USER garden

ENTRYPOINT ["garden"]
CMD ["--help"]

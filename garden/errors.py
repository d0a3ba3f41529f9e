"""The hub's exceptions: one small tree rooted in :class:`GardenError`.

- ``garden.influx.InfluxError`` and its kinds: unreachable, auth (a credential
  refused, or not allowed what it asked), missing database, rejected data, failed
  query; and ``garden.influx_access.InfluxUserError`` (a 1.x user name or password
  that cannot be);
- ``firmware_bridge.errors.ConfigError`` is used for bad settings on both
  sides, so a config error always names its key's path the same way.

Only the CLI turns these into messages and exit codes.
"""

from __future__ import annotations


class GardenError(Exception):
    """Root of the hub's exceptions."""

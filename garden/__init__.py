"""Garden Commons: the hub and library for community gardens run as commons.

The edge (line protocol, bridge, simulator) lives in :mod:`firmware_bridge`;
this package holds the hub and the ``garden`` command line.
"""

from firmware_bridge import __version__

__all__ = ["__version__"]

"""Garden Commons' edge: the node line protocol, the serial-to-MQTT bridge and the node simulator.

Imports only the standard library, pyserial and paho-mqtt, so it runs on a
small Pi in the shed without the hub's dependencies.
"""

__version__ = "0.1.0"

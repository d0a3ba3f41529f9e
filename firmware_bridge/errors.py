"""The bridge's exceptions: one small tree rooted in :class:`BridgeError`.

- :class:`ConfigError`: a bad setting or config payload; ``path`` names the key.
- :class:`PortError`: a serial port that cannot be opened or was lost; ``port``.
- :class:`BrokerUnreachable`: the MQTT broker refused or did not answer; ``broker``.
- :class:`SpoolError`: the on-disk spool cannot be opened or written; ``path``.

``line_protocol.ProtocolError`` is separate on purpose: a bad line is normal
traffic, counted and dropped, never an exception that leaves the decoder.
Only the CLI turns these into messages and exit codes.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of the bridge's exceptions."""


class ConfigError(BridgeError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class PortError(BridgeError):
    def __init__(self, port: str, problem: str) -> None:
        super().__init__(f"{port}: {problem}")
        self.port = port
        self.problem = problem


class SpoolError(BridgeError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"spool {path}: {problem}")
        self.path = path
        self.problem = problem


class BrokerUnreachable(BridgeError):
    def __init__(self, broker: str, problem: str) -> None:
        super().__init__(
            f"cannot reach the MQTT broker at {broker}: {problem}. "
            "Is Mosquitto running? (systemctl status mosquitto, or scripts/run.sh starts one)"
        )
        self.broker = broker
        self.problem = problem

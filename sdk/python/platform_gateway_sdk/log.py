"""Logging into the gateway's log, where each line is tagged with the backend and the call's trace.

    from platform_gateway_sdk import log
    log.info(f"allocated {machine} to cluster `{cluster_id}`")

Messages longer than 4 KiB are cut, and the backend's secret settings are cut out of them.
`print()` works too (the gateway logs stdout at info and stderr at warn), but loses the level.
"""

from __future__ import annotations

from typing import Any

from . import _host

__all__ = ["trace", "debug", "info", "warn", "warning", "error"]


def _emit(level: str, message: Any) -> None:
    _host.current().log(level, message if isinstance(message, str) else str(message))


def trace(message: Any) -> None:
    """The flow of a call, step by step."""
    _emit("trace", message)


def debug(message: Any) -> None:
    """Details useful when debugging the plugin."""
    _emit("debug", message)


def info(message: Any) -> None:
    """What someone running the platform wants to know."""
    _emit("info", message)


def warn(message: Any) -> None:
    """Something hazardous that did not stop the call."""
    _emit("warn", message)


#: The same as `warn`, under the name Python's `logging` uses.
warning = warn


def error(message: Any) -> None:
    """Something failed."""
    _emit("error", message)

"""Where settings, state and logs come from: the gateway, or a test's in-memory host.

Inside a component built by componentize-py, the generated bindings (`wit_world`) are importable
and `current()` is the gateway. Run natively (unit tests), there are no bindings: calls go to the
host a test installed with `platform_gateway_sdk.testing.Host`, or fail saying so.

componentize-py resolves imports when it builds the component, not when a call runs, so every
module used here is imported at the top of this file.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from .errors import Internal, Unavailable

try:  # Inside the component.
    from componentize_py_types import Err as WitErr
    from wit_world.imports import log as wit_log
    from wit_world.imports import replicante_platform_types as wit_types
    from wit_world.imports import settings as wit_settings
    from wit_world.imports import state as wit_state
except ImportError:  # Natively: no bindings.
    WitErr = None  # type: ignore[assignment,misc]
    wit_log = wit_types = wit_settings = wit_state = None  # type: ignore[assignment]

#: Whether the generated bindings are present (the code runs inside the gateway).
IN_COMPONENT = wit_state is not None

LEVELS = ("trace", "debug", "info", "warn", "error")


class Host:
    """What the SDK asks of its host. Errors are the SDK's own exceptions."""

    def settings_json(self) -> str:
        raise NotImplementedError

    def log(self, level: str, message: str) -> None:
        raise NotImplementedError

    def state_get(self, key: str) -> Optional[bytes]:
        raise NotImplementedError

    def state_set(self, key: str, value: bytes) -> None:
        raise NotImplementedError

    def state_delete(self, key: str) -> None:
        raise NotImplementedError

    def state_cas(self, key: str, expected: Optional[bytes], new: Optional[bytes]) -> bool:
        raise NotImplementedError

    def state_list(
        self, prefix: str, start_after: Optional[str], limit: int
    ) -> Tuple[List[str], Optional[str]]:
        raise NotImplementedError


#: How many provider calls are running (0 or 1: a component instance runs one call at a time).
#: The gateway's imports exist only during a call; at build time, when componentize-py imports
#: the app module, calling one would trap without saying why.
calls = 0


def _outside_a_call() -> RuntimeError:
    return RuntimeError(
        "platform_gateway_sdk: settings, state and log are only available during a call "
        "(discover, provision, deprovision), not when the module is imported: componentize-py "
        "imports it while building the component. Move this to __init__ or a method."
    )


class _Gateway(Host):
    """The gateway, through the generated bindings."""

    def __init__(self) -> None:
        self._levels = {
            "trace": wit_log.Level.TRACE,
            "debug": wit_log.Level.DEBUG,
            "info": wit_log.Level.INFO,
            "warn": wit_log.Level.WARN,
            "error": wit_log.Level.ERROR,
        }

    def settings_json(self) -> str:
        if not calls:
            raise _outside_a_call()
        return wit_settings.get()

    def log(self, level: str, message: str) -> None:
        if not calls:
            raise _outside_a_call()
        wit_log.log(self._levels[level], message)

    def _state(self, operation: str, key: str, function: Any, *args: Any) -> Any:
        if not calls:
            raise _outside_a_call()
        try:
            return function(*args)
        except WitErr as e:  # type: ignore[misc]
            error = e.value
            what = f"state {operation} `{key}`" if key is not None else f"state {operation}"
            if isinstance(error, wit_state.StateError_Unavailable):
                raise Unavailable(f"{what}: {error.value}") from None
            raise Internal(f"{what}: {getattr(error, 'value', error)}") from None

    def state_get(self, key: str) -> Optional[bytes]:
        value = self._state("get", key, wit_state.get, key)
        return None if value is None else bytes(value)

    def state_set(self, key: str, value: bytes) -> None:
        self._state("set", key, wit_state.set, key, value)

    def state_delete(self, key: str) -> None:
        self._state("delete", key, wit_state.delete, key)

    def state_cas(self, key: str, expected: Optional[bytes], new: Optional[bytes]) -> bool:
        return bool(self._state("compare-and-swap", key, wit_state.compare_and_swap, key, expected, new))

    def state_list(
        self, prefix: str, start_after: Optional[str], limit: int
    ) -> Tuple[List[str], Optional[str]]:
        page = self._state(
            "list-keys", None, wit_state.list_keys, prefix, start_after, limit
        )
        return list(page.keys), page.next


class _Nowhere(Host):
    """Natively, before a test installs a host."""

    def _fail(self, *_: Any) -> Any:
        raise RuntimeError(
            "platform_gateway_sdk is not running inside the gateway: in a test, install a host "
            "with `with platform_gateway_sdk.testing.Host(settings={...}):`"
        )

    settings_json = log = state_get = state_set = state_delete = state_cas = state_list = _fail  # type: ignore[assignment]


_current: Host = _Gateway() if IN_COMPONENT else _Nowhere()


def current() -> Host:
    return _current


def install(host: Host) -> Host:
    """Make `host` the current one; return the one it replaces."""
    global _current
    previous, _current = _current, host
    return previous

"""An in-memory stand-in for the gateway, to run a provider's logic natively with `unittest`.

    from platform_gateway_sdk.testing import Host

    with Host(settings={"machines": [...]}) as host:
        answer = Provider().provision(ProvisionRequest(cluster_id="c1", node_class="small"))
        assert host.logs[-1] == ("info", "allocated m1 to cluster `c1` group ``")

`Provider` there is the class `export` returns: it converts and checks answers, and turns
unexpected exceptions into `Internal`, as inside the gateway. The state is a dict guarded by a
lock, so threads can race on `compare_and_swap` the way concurrent calls do in the gateway.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _host
from .errors import Internal, Unavailable

__all__ = ["Host"]

MAX_KEY = 1024
MAX_VALUE = 1024 * 1024
MAX_PAGE = 1000


class Host(_host.Host):
    """Settings, state and a log in memory; a context manager that installs itself.

    - `settings`: the backend's settings (a dict; JSON-encoded as the gateway does).
    - `state`: the store, a dict of `str` keys to `bytes` values (read or seed it directly).
    - `logs`: every message, as `(level, message)`.
    - `unavailable`: set it to a message to make every state operation fail as the gateway's
      does when the store does not answer (`Unavailable`).
    - `page_size`: the largest page `list-keys` returns (1,000 in the gateway), lower it to
      exercise paging.
    - `before_state_call`: when set, `(operation, key)` is called before each state operation
      (`get`, `set`, `delete`, `compare-and-swap`, `list-keys`, the contract's names; the key is
      the prefix for `list-keys`). It may change `state`, to play another call's write between
      your read and your compare-and-swap, or raise (`Unavailable`) to fail the operation.
    """

    def __init__(self, settings: Optional[Dict[str, Any]] = None) -> None:
        self.settings: Dict[str, Any] = dict(settings or {})
        self.state: Dict[str, bytes] = {}
        self.logs: List[Tuple[str, str]] = []
        self.unavailable: Optional[str] = None
        self.page_size = MAX_PAGE
        self.before_state_call: Optional[Callable[[str, str], None]] = None
        self._lock = threading.Lock()
        self._previous: List[_host.Host] = []

    def __enter__(self) -> "Host":
        self._previous.append(_host.install(self))
        return self

    def __exit__(self, *_: Any) -> None:
        _host.install(self._previous.pop())

    # What the SDK calls.

    def settings_json(self) -> str:
        return json.dumps(self.settings)

    def log(self, level: str, message: str) -> None:
        if level not in _host.LEVELS:
            raise ValueError(f"unknown log level {level!r}")
        with self._lock:
            self.logs.append((level, message))

    def _check(self, operation: str, key: str, value: Optional[bytes] = None) -> None:
        if self.before_state_call is not None:
            self.before_state_call(operation, key)
        if self.unavailable is not None:
            raise Unavailable(f"state {operation} `{key}`: {self.unavailable}")
        if len(key.encode("utf-8")) > MAX_KEY:
            raise Internal(f"state {operation} `{key[:40]}...`: the key is over {MAX_KEY} bytes")
        if value is not None and len(value) > MAX_VALUE:
            raise Internal(f"state {operation} `{key}`: the value is over {MAX_VALUE} bytes")

    def state_get(self, key: str) -> Optional[bytes]:
        self._check("get", key)
        with self._lock:
            return self.state.get(key)

    def state_set(self, key: str, value: bytes) -> None:
        self._check("set", key, value)
        with self._lock:
            self.state[key] = bytes(value)

    def state_delete(self, key: str) -> None:
        self._check("delete", key)
        with self._lock:
            self.state.pop(key, None)

    def state_cas(self, key: str, expected: Optional[bytes], new: Optional[bytes]) -> bool:
        self._check("compare-and-swap", key, new)
        with self._lock:
            if self.state.get(key) != expected:
                return False
            if new is None:
                self.state.pop(key, None)
            else:
                self.state[key] = bytes(new)
            return True

    def state_list(
        self, prefix: str, start_after: Optional[str], limit: int
    ) -> Tuple[List[str], Optional[str]]:
        self._check("list-keys", prefix)
        limit = min(limit or MAX_PAGE, MAX_PAGE, self.page_size)
        with self._lock:
            keys = sorted(
                (k for k in self.state if k.startswith(prefix)), key=lambda k: k.encode("utf-8")
            )
        if start_after is not None:
            after = start_after.encode("utf-8")
            keys = [k for k in keys if k.encode("utf-8") > after]
        page = keys[:limit]
        return page, (page[-1] if len(keys) > limit else None)

"""The backend's durable key-value state.

Each backend has its own namespace; a write is durable when the call returns. Keys are strings
(up to 1 KiB), values bytes (up to 1 MiB); a `str` value is stored as UTF-8. The `*_json`
functions store JSON instead.

Every call runs in a fresh instance and the gateway runs several calls of one backend at once
(and several replicas may share one store): anything concurrent calls may race on goes through
`compare_and_swap`, or `update`/`update_json`, which read, apply a function and retry the swap.

Errors: the store not answering, or a write over the backend's write rate
(`limits.state_writes_per_second`), raises `Unavailable` (HTTP 503 if the provider lets it
through, which is usually right); a key or value over the limits, or a write over the backend's
state quotas (`limits.state_keys`, `state_bytes`, `state_value_size`), raises `Internal`.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Optional, Union

from . import _host
from .errors import Unavailable

__all__ = [
    "get",
    "set",
    "delete",
    "compare_and_swap",
    "list_keys",
    "update",
    "get_json",
    "set_json",
    "compare_and_swap_json",
    "update_json",
    "encode_json",
]

Value = Union[bytes, bytearray, memoryview, str]

#: How many times `update` and `update_json` try before giving up, by default.
DEFAULT_ATTEMPTS = 10


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a state key is a str, not {type(key).__name__}")
    return key


def _bytes(value: Optional[Value], what: str = "a state value") -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} is bytes or str, not {type(value).__name__}")


def get(key: str) -> Optional[bytes]:
    """The value under `key`, or `None` when there is none."""
    return _host.current().state_get(_key(key))


def set(key: str, value: Value) -> None:  # noqa: A001 (the contract's name)
    """Store `value` under `key`, replacing any previous value."""
    _host.current().state_set(_key(key), _bytes(value))  # type: ignore[arg-type]


def delete(key: str) -> None:
    """Remove `key`; removing a missing key is not an error."""
    _host.current().state_delete(_key(key))


def compare_and_swap(key: str, expected: Optional[Value], new: Optional[Value]) -> bool:
    """Atomically replace the value under `key` with `new` if, and only if, it equals `expected`.

    `expected=None` means "the key is absent" (so `compare_and_swap(k, None, v)` creates `k` only
    if nobody else did); `new=None` deletes the key. Returns whether the swap happened.
    """
    return _host.current().state_cas(
        _key(key), _bytes(expected, "expected"), _bytes(new, "new")
    )


def list_keys(
    prefix: str = "", start_after: Optional[str] = None, page_size: int = 0
) -> Iterator[str]:
    """Every key starting with `prefix` (after `start_after`, if given), in ascending byte order.

    A generator that fetches pages of `page_size` keys (0: the gateway's largest, 1,000) as it
    goes, so a loop may stop early without reading the rest.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"a key prefix is a str, not {type(prefix).__name__}")
    host = _host.current()
    after = start_after
    while True:
        keys, after = host.state_list(prefix, after, page_size)
        yield from keys
        if after is None:
            return


def update(
    key: str,
    function: Callable[[Optional[bytes]], Optional[Value]],
    attempts: int = DEFAULT_ATTEMPTS,
) -> Optional[bytes]:
    """Read `key`, compute its new value with `function(current)` and swap it in atomically.

    `function` gets the current value (`None` when absent) and returns the new one (`None`
    deletes the key). When another call changed the key in between, it reads and tries again,
    up to `attempts` times, then raises `Unavailable`. `function` may raise to give up (raise
    `NotFound`, `Conflict`, ...: the exception goes through). Returns the value stored. Nothing
    is written when the value does not change.
    """
    for _ in range(max(1, attempts)):
        current = get(key)
        new = _bytes(function(current), "the new value")
        if new == current:
            return new
        if compare_and_swap(key, current, new):
            return new
    raise Unavailable(
        f"state `{key}` kept changing under concurrent calls ({attempts} attempts)", retry_after=1
    )


def encode_json(value: Any) -> bytes:
    """The JSON `*_json` functions store: compact, keys sorted, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _decode_json(key: str, raw: Optional[bytes]) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ValueError(f"state `{key}` is not JSON: {e}") from None


def get_json(key: str) -> Any:
    """The JSON value under `key`, decoded, or `None` when there is none."""
    return _decode_json(key, get(key))


def set_json(key: str, value: Any) -> None:
    """Store `value` as JSON under `key`."""
    set(key, encode_json(value))


def compare_and_swap_json(key: str, expected: Any, new: Any) -> bool:
    """`compare_and_swap` with JSON values (`None`: absent), compared as `encode_json` encodes.

    The swap happens only if the stored bytes are exactly `encode_json(expected)`; a value read
    with `get_json` and written by these functions compares equal.
    """
    return compare_and_swap(
        key,
        None if expected is None else encode_json(expected),
        None if new is None else encode_json(new),
    )


def update_json(
    key: str, function: Callable[[Any], Any], attempts: int = DEFAULT_ATTEMPTS
) -> Any:
    """`update` with JSON values: `function(current)` gets the decoded value (`None` when absent)
    and returns the new value (`None` deletes the key). Returns the value stored."""

    def apply(raw: Optional[bytes]) -> Optional[bytes]:
        new = function(_decode_json(key, raw))
        return None if new is None else encode_json(new)

    return _decode_json(key, update(key, apply, attempts))

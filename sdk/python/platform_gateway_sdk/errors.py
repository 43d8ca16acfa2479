"""The errors a provider raises, one per case of the contract's `provider-error`.

Raise them from `discover`, `provision` or `deprovision`; the SDK turns them into the WIT
variant the gateway maps to an HTTP status. Any other exception is reported as `Internal`
(HTTP 500) with its type and message, and its traceback is logged at error.

Write messages for the operator who reads them; never put secrets in them.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "ProviderError",
    "InvalidRequest",
    "NotFound",
    "Conflict",
    "Unsupported",
    "Unavailable",
    "Internal",
]

# The largest value of a WIT u32, the type of `retry-after-seconds`.
_U32_MAX = 2**32 - 1


class ProviderError(Exception):
    """Base of every error a provider raises on purpose. Raised as is, it is `Internal`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = str(message)

    def __str__(self) -> str:
        return self.message


class InvalidRequest(ProviderError):
    """The request cannot be served as asked (an unknown node class, a bad attribute). HTTP 400."""


class NotFound(ProviderError):
    """The node or cluster does not exist on this backend. HTTP 404."""


class Conflict(ProviderError):
    """The request conflicts with the current state (the node is being removed already). HTTP 409."""


class Unsupported(ProviderError):
    """This provider does not do this operation at all. HTTP 501."""


class Unavailable(ProviderError):
    """The backend cannot serve now but may later (no free capacity, an API is down). HTTP 503.

    `retry_after` is when to try again, in whole seconds, if known; the gateway passes it to the
    client as `Retry-After` (its own default applies without it).
    """

    def __init__(self, message: str, retry_after: Optional[int] = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, (int, float)):
                raise TypeError(
                    f"retry_after must be a number of seconds, not {type(retry_after).__name__}"
                )
            retry_after = min(max(int(retry_after), 0), _U32_MAX)
        self.retry_after: Optional[int] = retry_after


class Internal(ProviderError):
    """Anything else that went wrong inside the plugin. HTTP 500."""

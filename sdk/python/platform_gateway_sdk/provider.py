"""The `Provider` base class, and `export`, which makes a subclass the plugin's implementation.

componentize-py looks for a class named `Provider` in the app module (the module named on its
command line), instantiates it once while it builds the component and calls its `discover`,
`provision` and `deprovision` with the generated binding types. `export(MyProvider)` defines
that class: an adapter that, on every call, creates a `MyProvider`, converts the request to
this SDK's dataclasses, calls the method and converts the answer back; a `ProviderError` it
raises becomes the matching case of the contract's `provider-error`, and any other exception
becomes `internal` (HTTP 500), its traceback logged at error, instead of a trap (HTTP 502).
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any, Callable, Iterable, List, Optional, Type

from . import _host, log
from .errors import (
    Conflict,
    Internal,
    InvalidRequest,
    NotFound,
    ProviderError,
    Unavailable,
    Unsupported,
)
from .records import Cluster, DeprovisionRequest, Node, ProvisionRequest, ProvisionResponse

__all__ = ["Provider", "export", "settings"]

_U32_MAX = 2**32 - 1


def settings() -> dict:
    """The backend's `settings` table from the gateway config, as a dict (`{}` when none).

    TOML values map to JSON ones: tables to dicts, arrays to lists, dates and times to strings.
    Secret references (`{ from_env = ... }`, `{ from_file = ... }`) are already resolved.
    """
    text = _host.current().settings_json()
    value = json.loads(text)
    if not isinstance(value, dict):
        raise Internal(f"the gateway's settings are not a JSON object: {text[:80]}")
    return value


class Provider:
    """Subclass it and override the operations your platform does.

    Every call runs in a fresh instance of the plugin: the class is instantiated at the start of
    each call (so `__init__` may read `settings()`), and nothing in memory survives the call.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "Provider":
        if _host.IN_COMPONENT and not _host.calls:
            # componentize-py instantiates the app module's `Provider` while it builds the
            # component: without `export`, that is this class or a subclass, not the adapter.
            raise TypeError(
                f"the app module's `Provider` is `{cls.__qualname__}`, not the class `export` "
                f"makes: call `export(YourProvider)` at the top level of the app module (it "
                f"defines the `Provider` class componentize-py looks for there)"
            )
        return super().__new__(cls)

    def discover(self) -> Iterable[Cluster]:
        """Every cluster this backend has nodes for, each with every one of its nodes, whatever
        their health. A deprovisioned node must not appear once it is gone."""
        return []

    def provision(self, request: ProvisionRequest) -> ProvisionResponse:
        """Start creating up to `request.count` nodes; say how many, with their IDs if known.

        The default raises `Unsupported` (HTTP 501), for a provider that only reports nodes."""
        raise Unsupported("this backend does not provision nodes")

    def deprovision(self, request: DeprovisionRequest) -> None:
        """Terminate one node; it must not be replaced, and leaves discovery once gone. A node
        this backend does not know is `NotFound`.

        The default raises `Unsupported` (HTTP 501), for a provider that only reports nodes."""
        raise Unsupported("this backend does not deprovision nodes")


def _text(value: Any, what: str, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise Internal(f"{what} must be a str, not {type(value).__name__} {value!r:.80}")
    if not empty and not value:
        raise Internal(f"{what} must not be empty")
    return value


def _optional_text(value: Any, what: str) -> Optional[str]:
    return None if value is None else _text(value, what, empty=True)


def _u32(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32_MAX:
        raise Internal(f"{what} must be a whole number from 0 to {_U32_MAX}, not {value!r:.80}")
    return value


def _error_to_wit(error: ProviderError) -> Any:
    types = _host.wit_types
    message = error.message
    if isinstance(error, InvalidRequest):
        return types.ProviderError_InvalidRequest(message)
    if isinstance(error, NotFound):
        return types.ProviderError_NotFound(message)
    if isinstance(error, Conflict):
        return types.ProviderError_Conflict(message)
    if isinstance(error, Unsupported):
        return types.ProviderError_Unsupported(message)
    if isinstance(error, Unavailable):
        return types.ProviderError_Unavailable(types.Unavailable(message, error.retry_after))
    return types.ProviderError_Internal(message)


class _Boundary:
    """Converts between this SDK's values and the generated bindings (or, natively, checks the
    SDK's values and gives them back as they are, so that tests see what the gateway would)."""

    def __init__(self) -> None:
        self.wit = _host.wit_types

    def request(self, wire: Any) -> ProvisionRequest:
        attributes = wire.attributes
        if isinstance(attributes, str):
            attributes = json.loads(attributes) if attributes else {}
        return ProvisionRequest(
            request_id=wire.request_id,
            cluster_id=wire.cluster_id,
            store=wire.store,
            store_version=wire.store_version,
            node_group=wire.node_group,
            node_class=wire.node_class,
            desired_count=wire.desired_count,
            count=wire.count,
            attributes=attributes,
        )

    def deprovision_request(self, wire: Any) -> DeprovisionRequest:
        return DeprovisionRequest(cluster_id=wire.cluster_id, node_id=wire.node_id)

    def clusters(self, answer: Any) -> List[Any]:
        if answer is None or isinstance(answer, (str, bytes, dict)):
            raise Internal(f"discover must return a list of Cluster, not {type(answer).__name__}")
        clusters = []
        for c in answer:
            cluster_id = _text(getattr(c, "cluster_id", None), "Cluster.cluster_id")
            nodes = []
            for n in getattr(c, "nodes", None) or []:
                node = (
                    _text(getattr(n, "node_id", None), "Node.node_id"),
                    _text(getattr(n, "agent_address", None), "Node.agent_address"),
                    _optional_text(getattr(n, "node_class", None), "Node.node_class"),
                    _optional_text(getattr(n, "node_group", None), "Node.node_group"),
                )
                nodes.append(self.wit.Node(*node) if self.wit else Node(*node))
            clusters.append(
                self.wit.Cluster(cluster_id, nodes) if self.wit else Cluster(cluster_id, nodes)
            )
        return clusters

    def provision_response(self, answer: Any) -> Any:
        if not hasattr(answer, "count"):
            raise Internal(
                f"provision must return a ProvisionResponse, not {type(answer).__name__}"
            )
        count = _u32(answer.count, "ProvisionResponse.count")
        node_ids = getattr(answer, "node_ids", None)
        if node_ids is not None:
            if isinstance(node_ids, (str, bytes)):
                raise Internal("ProvisionResponse.node_ids must be a list of str, not a string")
            node_ids = [_text(i, "each of ProvisionResponse.node_ids") for i in node_ids]
        if self.wit:
            return self.wit.ProvisionResponse(count, node_ids)
        return ProvisionResponse(count=count, node_ids=node_ids)


def _fail(error: ProviderError) -> BaseException:
    """What to raise across the boundary for `error`."""
    if _host.WitErr is None:
        return error
    return _host.WitErr(_error_to_wit(error))


def _unexpected(operation: str, error: BaseException) -> ProviderError:
    """`error`, which the provider did not raise on purpose, as `Internal`, its traceback logged."""
    name = type(error).__name__
    detail = str(error)
    message = f"{operation} failed: {name}: {detail}" if detail else f"{operation} failed: {name}"
    try:
        # The traceback from the provider's code on (without this module's frames).
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_globals.get("__name__") == __name__:
            tb = tb.tb_next
        trace = "".join(traceback.format_exception(type(error), error, tb or error.__traceback__))
        log.error(f"{message}\n{trace.rstrip()}")
    except BaseException:  # Logging must not turn a 500 into a trap.
        pass
    return Internal(message)


def _call(make: Callable[[], Any], operation: str, call: Callable[[Any], Any]) -> Any:
    _host.calls += 1
    try:
        return call(make())
    except ProviderError as e:
        raise _fail(e) from None
    except BaseException as e:
        if _host.WitErr is not None and isinstance(e, _host.WitErr):
            # A generated binding's error raised as is: a `provider-error` goes through.
            if type(e.value).__name__.startswith("ProviderError_"):
                raise
        raise _fail(_unexpected(operation, e)) from None
    finally:
        _host.calls -= 1


def export(provider: Type[Provider]) -> type:
    """Make `provider` (a class, usually a `Provider` subclass) the plugin's implementation.

    Call it once, at the top level of the app module:

        export(Inventory)

    It defines `Provider` in the calling module (the class componentize-py looks for there) and
    returns it, so `Provider = export(Inventory)` says the same thing explicitly. Natively, the
    returned class runs the same checks and conversions, which lets tests call it as the gateway
    would: `Provider().provision(ProvisionRequest(...))`.
    """
    if not isinstance(provider, type):
        raise TypeError(f"export() takes a class, not {type(provider).__name__}")
    boundary = _Boundary()

    class Adapter:
        def __init__(self) -> None:
            # componentize-py creates this object while building the component, where the
            # gateway's imports are not available: the provider itself is created per call.
            pass

        def discover(self) -> List[Any]:
            return _call(provider, "discover", lambda p: boundary.clusters(p.discover()))

        def provision(self, request: Any) -> Any:
            return _call(
                provider,
                "provision",
                lambda p: boundary.provision_response(p.provision(boundary.request(request))),
            )

        def deprovision(self, request: Any) -> None:
            def run(p: Any) -> None:
                p.deprovision(boundary.deprovision_request(request))

            return _call(provider, "deprovision", run)

    Adapter.__name__ = Adapter.__qualname__ = "Provider"
    Adapter.__module__ = getattr(provider, "__module__", __name__)
    Adapter.__doc__ = f"The exported provider: {provider.__name__}, adapted to the contract."
    Adapter.implementation = provider  # type: ignore[attr-defined]
    caller = sys._getframe(1).f_globals
    caller["Provider"] = Adapter
    return Adapter

"""Write platform-gateway plugins in Python (contract `replicante:platform@0.2.0`).

A plugin is a `Provider` subclass and one call of `export`, in the module you give
componentize-py:

    from platform_gateway_sdk import Cluster, Node, Provider, export, settings, state, log

    class Hello(Provider):
        def discover(self):
            return [Cluster("hello", [Node("n1", "http://10.0.0.1:37000")])]

    export(Hello)

Errors are this package's exceptions (`InvalidRequest`, `NotFound`, `Conflict`, `Unsupported`,
`Unavailable`, `Internal`); anything else raised is reported as `Internal`. Settings come from
`settings()`, durable state from `state`, logging through `log`. The generated bindings
(`wit_world`) stay behind this package; natively, `platform_gateway_sdk.testing.Host` stands in
for the gateway so that plain `unittest` runs a provider's logic.
"""

from . import log, state
from .errors import (
    Conflict,
    Internal,
    InvalidRequest,
    NotFound,
    ProviderError,
    Unavailable,
    Unsupported,
)
from .provider import Provider, export, settings
from .records import Cluster, DeprovisionRequest, Node, ProvisionRequest, ProvisionResponse

#: The contract this SDK implements.
CONTRACT = "replicante:platform@0.2.0"

__version__ = "0.2.0"

__all__ = [
    "CONTRACT",
    "Cluster",
    "Conflict",
    "DeprovisionRequest",
    "Internal",
    "InvalidRequest",
    "Node",
    "NotFound",
    "Provider",
    "ProviderError",
    "ProvisionRequest",
    "ProvisionResponse",
    "Unavailable",
    "Unsupported",
    "export",
    "log",
    "settings",
    "state",
]

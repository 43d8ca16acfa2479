"""The values that travel between the gateway and a provider, as plain dataclasses.

They mirror the records of the contract (`types.wit`), named for Python, with two conveniences:
`ProvisionRequest.attributes` is already a `dict` (the contract carries JSON text), and
`ProvisionResponse.count` defaults to the number of `node_ids`. The SDK converts them to and
from the generated bindings at the boundary, so a provider never imports `wit_world`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["ProvisionRequest", "DeprovisionRequest", "Node", "Cluster", "ProvisionResponse"]


_requests = itertools.count(1)


def _new_request_id() -> str:
    # The gateway always sends one; a request built in a test without one is a new request,
    # not a retry of every other such request.
    return f"request-{next(_requests)}"


@dataclass(kw_only=True)
class ProvisionRequest:
    """A request to create `count` nodes in one node group of a cluster.

    The gateway has validated it: IDs are non-empty, `count` is at least 1, `store_version` is
    the effective one for the group and `attributes` are the cluster's with the group's merged
    on top.
    """

    #: The same on every retry of one request (from the client's `Idempotency-Key` when it sent
    #: one): key state on it, or pass it to an API's idempotency token, so that a retried
    #: provision creates its nodes once. At most 64 characters of `[A-Za-z0-9-]`. Left out (in
    #: a test), each request gets a new one: give the same one twice to test a retry.
    request_id: str = field(default_factory=_new_request_id)
    cluster_id: str = ""
    #: The store software (`mongodb`, `zookeeper`, `kafka`, ...).
    store: str = ""
    store_version: str = ""
    node_group: str = ""
    #: The platform-specific class of node the group asks for; its meaning is the provider's.
    node_class: str = ""
    #: How many nodes the client wants in the group overall (informational).
    desired_count: int = 1
    #: How many nodes to create now, at least 1. Creating fewer is fine; more is not.
    count: int = 1
    attributes: Dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class DeprovisionRequest:
    """A request to terminate one node of a cluster."""

    cluster_id: str = ""
    #: As the provider reported it.
    node_id: str = ""


@dataclass
class Node:
    """A node, as discovery reports it."""

    #: Unique within its cluster, never empty.
    node_id: str
    #: Where the node's Replicante agent listens (`http://10.0.0.7:37000`).
    agent_address: str
    #: The node's class (an instance type), when known.
    node_class: Optional[str] = None
    #: The node group it was provisioned for, when known: report it whenever you can, Replicante
    #: counts nodes per group.
    node_group: Optional[str] = None


@dataclass
class Cluster:
    """A cluster and the nodes of it this backend knows about."""

    cluster_id: str
    nodes: List[Node] = field(default_factory=list)


@dataclass
class ProvisionResponse:
    """What a provision did: `count` nodes are being created, named `node_ids` when known.

    `count` defaults to `len(node_ids)`; when both are given, `node_ids` must hold exactly
    `count` distinct, non-empty IDs.
    """

    count: Optional[int] = None
    node_ids: Optional[List[str]] = None

    def __post_init__(self) -> None:
        if self.count is None:
            if self.node_ids is None:
                raise ValueError("a ProvisionResponse needs a count, node_ids, or both")
            self.node_ids = list(self.node_ids)
            self.count = len(self.node_ids)

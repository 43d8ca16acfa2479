"""python-inventory: a Replicante platform over a fixed inventory of machines, in Python.

The operator lists the machines in the backend's settings (see settings.toml); a node is a
machine allocated to a cluster. Allocations live in the backend's state, one key per machine
(`machine/<id>`), and are taken with compare-and-swap from "absent", so concurrent provisions
never hand out one machine twice. Each allocation remembers the provision's request ID: a retry
of that request (same ID) gets the machines it was given, not new ones.

Discovery reads the allocations, not the settings, so a machine removed from the settings while
allocated is still reported until it is deprovisioned.
"""

from dataclasses import dataclass

from platform_gateway_sdk import (
    Cluster,
    Conflict,
    InvalidRequest,
    Node,
    NotFound,
    Provider,
    ProvisionResponse,
    Unavailable,
    export,
    log,
    settings,
    state,
)

PREFIX = "machine/"


@dataclass
class Machine:
    """A machine, as the operator lists it (an unknown or missing field is a TypeError, which
    the SDK reports as an internal error naming it)."""

    id: str
    agent_address: str
    node_class: str


def key(machine_id):
    return PREFIX + machine_id


def allocations():
    """Every allocation: (machine ID, allocation), in machine ID order."""
    for k in state.list_keys(PREFIX):
        allocation = state.get_json(k)
        if allocation is not None:  # Released between the listing and the read.
            yield k[len(PREFIX):], allocation


class Inventory(Provider):
    def __init__(self):
        self.machines = [Machine(**m) for m in settings().get("machines", [])]

    def discover(self):
        clusters = {}
        for machine_id, a in allocations():
            node = Node(machine_id, a["agent_address"], a["node_class"], a["node_group"])
            clusters.setdefault(a["cluster_id"], []).append(node)
        return [Cluster(cluster_id, nodes) for cluster_id, nodes in sorted(clusters.items())]

    def provision(self, request):
        of_class = [m for m in self.machines if m.node_class == request.node_class]
        if not of_class:
            offered = ", ".join(sorted({m.node_class for m in self.machines})) or "none"
            raise InvalidRequest(
                f"the inventory has no machine of node class `{request.node_class}` (it has: {offered})"
            )

        taken = dict(allocations())
        # A retry of a request that was served (or half-served) gets the same machines back.
        mine = [m for m, a in taken.items() if request.request_id and a.get("request_id") == request.request_id]
        if mine:
            a = taken[mine[0]]
            if (a["cluster_id"], a["node_group"]) != (request.cluster_id, request.node_group):
                raise Conflict(
                    f"request ID `{request.request_id}` was already used for cluster "
                    f"`{a['cluster_id']}` group `{a['node_group']}`"
                )
            log.info(f"request `{request.request_id}` repeated: returning {', '.join(mine)}")
            return ProvisionResponse(node_ids=mine[: request.count])

        allocated = []
        for machine in of_class:
            if len(allocated) == request.count:
                break
            if machine.id in taken:
                continue
            allocation = {
                "cluster_id": request.cluster_id,
                "node_group": request.node_group,
                "node_class": machine.node_class,
                "agent_address": machine.agent_address,
                "request_id": request.request_id,
            }
            # Only a free machine (no key) can be taken; a lost race moves on to the next one.
            if state.compare_and_swap_json(key(machine.id), None, allocation):
                allocated.append(machine.id)
        if not allocated:
            raise Unavailable(
                f"no free machine of node class `{request.node_class}`: all {len(of_class)} are allocated"
            )
        if len(allocated) < request.count:
            log.warn(
                f"cluster `{request.cluster_id}` group `{request.node_group}`: asked for "
                f"{request.count} machines of class `{request.node_class}`, {len(allocated)} were free"
            )
        log.info(
            f"allocated {', '.join(allocated)} to cluster `{request.cluster_id}` group `{request.node_group}`"
        )
        return ProvisionResponse(node_ids=allocated)

    def deprovision(self, request):
        def release(allocation):
            if allocation is None or allocation["cluster_id"] != request.cluster_id:
                raise NotFound(f"node `{request.node_id}` is not allocated to cluster `{request.cluster_id}`")
            return None  # Delete the key, if it still holds what was read.

        state.update_json(key(request.node_id), release)
        log.info(f"released machine `{request.node_id}` from cluster `{request.cluster_id}`")


export(Inventory)

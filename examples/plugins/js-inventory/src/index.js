// js-inventory: a Replicante platform over a fixed inventory of machines, in JavaScript.
//
// The operator lists the machines in the backend's settings; a node is a machine allocated to a
// cluster. Allocations live in the backend's state under `machine/<id>` and are taken with
// compare-and-swap (absent -> allocated), so concurrent provisions never hand out one machine
// twice. A node's ID is its machine's ID. Discovery reads the allocations, not the settings, so
// a machine removed from the settings while allocated is reported until it is deprovisioned.
//
// A provision remembers its request ID in each allocation: a retry of the same request (the
// client's `Idempotency-Key`) answers the machines it got the first time instead of taking more.
//
// Settings:
//
//   [backends.inventory.settings]
//   machines = [
//     { id = "m1", agent_address = "http://10.0.0.1:37000", node_class = "small" },
//   ]

import {
  Conflict,
  Internal,
  InvalidRequest,
  NotFound,
  Provider,
  Unavailable,
  exportProvider,
  log,
  requireSetting,
  state,
} from 'platform-gateway-sdk';

const PREFIX = 'machine/';

const key = (machineId) => `${PREFIX}${machineId}`;

/** The machines of the settings, checked: `[{ id, agentAddress, nodeClass }]`. */
function machines() {
  const listed = requireSetting('machines');
  if (!Array.isArray(listed)) throw new Internal('setting `machines` must be an array of machines');
  const seen = new Set();
  return listed.map((machine, i) => {
    const { id, agent_address: agentAddress, node_class: nodeClass = '' } = machine ?? {};
    if (typeof id !== 'string' || !id || typeof agentAddress !== 'string' || !agentAddress) {
      throw new Internal(`setting \`machines\`: machine ${i} needs a non-empty \`id\` and \`agent_address\``);
    }
    if (typeof nodeClass !== 'string') {
      throw new Internal(`setting \`machines\`: machine \`${id}\` has a \`node_class\` that is not a string`);
    }
    if (seen.has(id)) throw new Internal(`setting \`machines\`: machine \`${id}\` is listed twice`);
    // Not caught here: an `agent_address` that is not a URL throws a TypeError, which the SDK
    // answers as `internal` (HTTP 500) with its stack in the gateway's log, as any exception.
    new URL(agentAddress);
    seen.add(id);
    return { id, agentAddress, nodeClass };
  });
}

export class Inventory extends Provider {
  discover() {
    const clusters = new Map();
    for (const k of state.listKeys(PREFIX)) {
      // A key listed but gone by the time it is read was released in between.
      const allocation = state.getJson(k);
      if (allocation === undefined) continue;
      if (!clusters.has(allocation.clusterId)) clusters.set(allocation.clusterId, []);
      clusters.get(allocation.clusterId).push({
        nodeId: k.slice(PREFIX.length),
        agentAddress: allocation.agentAddress,
        nodeClass: allocation.nodeClass || undefined,
        nodeGroup: allocation.nodeGroup,
      });
    }
    return [...clusters].map(([clusterId, nodes]) => ({ clusterId, nodes }));
  }

  provision(request) {
    const ofClass = machines().filter((m) => m.nodeClass === request.nodeClass);
    if (ofClass.length === 0) {
      const offered = [...new Set(machines().map((m) => m.nodeClass))].map((c) => `\`${c}\``);
      throw new InvalidRequest(
        `the inventory has no machine of node class \`${request.nodeClass}\` (it has ${offered.join(', ') || 'none'})`,
      );
    }

    // A retry of a request that was served: answer what it got.
    const free = [];
    const again = [];
    for (const machine of ofClass) {
      const allocation = state.getJson(key(machine.id));
      if (allocation === undefined) free.push(machine);
      else if (allocation.requestId === request.requestId && allocation.clusterId === request.clusterId) {
        again.push(machine.id);
      }
    }
    if (again.length > 0) {
      log.info(`request ${request.requestId} again: it has ${again.join(', ')} already`);
      return { count: again.length, nodeIds: again };
    }

    const nodeIds = [];
    for (const machine of free) {
      if (nodeIds.length === request.count) break;
      const allocation = {
        clusterId: request.clusterId,
        nodeGroup: request.nodeGroup,
        nodeClass: machine.nodeClass,
        agentAddress: machine.agentAddress,
        requestId: request.requestId,
      };
      // Only a free machine (no key) can be taken; a lost race moves on to the next one.
      if (state.compareAndSwap(key(machine.id), undefined, JSON.stringify(allocation))) {
        nodeIds.push(machine.id);
      }
    }
    if (nodeIds.length === 0) {
      throw new Unavailable(
        `no free machine of node class \`${request.nodeClass}\`: all ${ofClass.length} are allocated`,
        { retryAfter: 60 },
      );
    }
    if (nodeIds.length < request.count) {
      log.warn(
        `cluster \`${request.clusterId}\` group \`${request.nodeGroup}\`: asked for ${request.count} machines ` +
          `of class \`${request.nodeClass}\`, ${nodeIds.length} were free`,
      );
    }
    log.info(`allocated ${nodeIds.join(', ')} to cluster \`${request.clusterId}\` group \`${request.nodeGroup}\``);
    return { count: nodeIds.length, nodeIds };
  }

  deprovision({ clusterId, nodeId }) {
    const k = key(nodeId);
    const current = state.getString(k);
    if (current === undefined || JSON.parse(current).clusterId !== clusterId) {
      throw new NotFound(`node \`${nodeId}\` is not allocated to cluster \`${clusterId}\``);
    }
    if (!state.compareAndSwap(k, current, undefined)) {
      throw new Conflict(`node \`${nodeId}\` changed while it was being released; try again`);
    }
    log.info(`released machine \`${nodeId}\` from cluster \`${clusterId}\``);
  }
}

export const provider = exportProvider(new Inventory());

// The `provider` interface: the base class a plugin extends, and its export.

import { enterCall } from './call.js';
import { Internal, Unsupported, toProviderError } from './errors.js';
import { log } from './log.js';
import { resetSettings } from './settings.js';

/**
 * The three operations of a Replicante Platform. Extend it and override what the backend does;
 * the others answer `Unsupported` (HTTP 501). Methods may be `async`.
 *
 * The gateway has validated each request before a method is called: IDs are non-empty, the
 * node group exists, `count` is at least 1, the store version is the effective one.
 */
export class Provider {
  /**
   * Every cluster this backend has nodes for, each with every node whatever its health:
   * `[{ clusterId, nodes: [{ nodeId, agentAddress, nodeClass?, nodeGroup? }] }]`.
   *
   * @returns {import('../index.js').Cluster[] | Promise<import('../index.js').Cluster[]>}
   */
  discover() {
    throw new Unsupported('this backend does not discover clusters');
  }

  /**
   * Start creating up to `request.count` nodes: `{ count, nodeIds? }` (`count` defaults to the
   * number of `nodeIds`).
   *
   * @param {import('../index.js').ProvisionRequest} request
   * @returns {import('../index.js').ProvisionResponse | Promise<import('../index.js').ProvisionResponse>}
   */
  provision(request) {
    void request;
    throw new Unsupported('this backend does not provision nodes');
  }

  /**
   * Terminate a node: it must not be replaced, and must leave discovery once gone. Unknown
   * nodes are `NotFound`.
   *
   * @param {import('../index.js').DeprovisionRequest} request
   * @returns {void | Promise<void>}
   */
  deprovision(request) {
    void request;
    throw new Unsupported('this backend does not deprovision nodes');
  }
}

function describe(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}

function requireString(value, what) {
  if (typeof value !== 'string') throw new Internal(`${what} must be a string, not ${describe(value)}`);
  return value;
}

function optionalString(value, what) {
  return value === undefined || value === null ? undefined : requireString(value, what);
}

function requireCount(value, what) {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new Internal(`${what} must be a whole number, not ${JSON.stringify(value) ?? describe(value)}`);
  }
  return value;
}

/** A key the contract does not have is an author's typo (`node_ids`): name it. */
function rejectUnknown(value, allowed, where) {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      const like = allowed.find((k) => k.toLowerCase() === key.replaceAll('_', '').toLowerCase());
      const hint = like ? `: did you mean \`${like}\`?` : '';
      throw new Internal(`${where} has an unknown key \`${key}\` (it takes ${allowed.map((k) => `\`${k}\``).join(', ')})${hint}`);
    }
  }
}

/**
 * Other keys of a discovered cluster or node are left out, but the snake_case spelling of one
 * of the contract's (`node_id`) is a mistake that would lose the value: name it.
 */
function snakeCase(value, keys, where) {
  for (const key of keys) {
    const snake = key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    if (snake !== key && value[key] === undefined && value[snake] !== undefined) {
      throw new Internal(`${where} has \`${snake}\`: the SDK's records are camelCase, say \`${key}\``);
    }
  }
}

/** What `discover` returned, checked and shaped as the contract's `list<cluster>`. */
function toClusters(value) {
  if (!Array.isArray(value)) throw new Internal(`discover must return an array of clusters, not ${describe(value)}`);
  return value.map((cluster, i) => {
    if (cluster === null || typeof cluster !== 'object') {
      throw new Internal(`discover: cluster ${i} must be an object, not ${describe(cluster)}`);
    }
    snakeCase(cluster, ['clusterId', 'nodes'], `discover: cluster ${i}`);
    const clusterId = requireString(cluster.clusterId, `discover: cluster ${i}'s clusterId`);
    const nodes = cluster.nodes ?? [];
    if (!Array.isArray(nodes)) {
      throw new Internal(`discover: cluster \`${clusterId}\`'s nodes must be an array, not ${describe(nodes)}`);
    }
    return {
      clusterId,
      nodes: nodes.map((node, j) => {
        const where = `discover: cluster \`${clusterId}\` node ${j}`;
        if (node === null || typeof node !== 'object') throw new Internal(`${where} must be an object, not ${describe(node)}`);
        snakeCase(node, ['nodeId', 'agentAddress', 'nodeClass', 'nodeGroup'], where);
        return {
          nodeId: requireString(node.nodeId, `${where}: nodeId`),
          agentAddress: requireString(node.agentAddress, `${where}: agentAddress`),
          nodeClass: optionalString(node.nodeClass, `${where}: nodeClass`),
          nodeGroup: optionalString(node.nodeGroup, `${where}: nodeGroup`),
        };
      }),
    };
  });
}

/** What `provision` returned, checked and shaped as the contract's `provision-response`. */
function toProvisionResponse(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Internal(`provision must return { count, nodeIds }, not ${describe(value)}`);
  }
  rejectUnknown(value, ['count', 'nodeIds'], 'provision: the answer');
  let nodeIds;
  if (value.nodeIds !== undefined && value.nodeIds !== null) {
    if (!Array.isArray(value.nodeIds)) {
      throw new Internal(`provision: nodeIds must be an array of strings, not ${describe(value.nodeIds)}`);
    }
    nodeIds = value.nodeIds.map((id, i) => requireString(id, `provision: nodeIds[${i}]`));
  }
  const count = value.count ?? nodeIds?.length;
  return { count: requireCount(count, 'provision: count'), nodeIds };
}

/** The request as the plugin sees it: the contract's record, `attributes` parsed. */
function toProvisionRequest(request) {
  let attributes;
  try {
    attributes = JSON.parse(request.attributes);
  } catch (e) {
    throw new Internal(`the gateway sent attributes that are not JSON: ${e.message}`);
  }
  return { ...request, attributes };
}

/**
 * Run one operation and answer the contract's `result`: what the method returned, shaped, or
 * what it threw as a `provider-error` (never a trap).
 */
async function run(operation, f, shape) {
  enterCall();
  resetSettings();
  try {
    return { tag: 'ok', val: shape(await f()) };
  } catch (error) {
    try {
      return { tag: 'err', val: toProviderError(error, (text) => log.error(`${operation}: ${text}`)) };
    } catch {
      return { tag: 'err', val: { tag: 'internal', val: `${operation} failed, and so did reporting it` } };
    }
  }
}

/**
 * The object to export as the plugin's `provider` interface, calling `impl`'s methods:
 *
 * ```js
 * export const provider = exportProvider(new MyProvider());
 * ```
 *
 * The export must be named `provider` (the `replicante:platform/provider@0.2.0` interface).
 * `impl` is a `Provider`, or any object with some of its methods (missing ones answer
 * `Unsupported`).
 *
 * @param {Partial<Provider>} impl
 */
export function exportProvider(impl) {
  // A class (as Python's `export(Class)`): a new instance at the start of every call, so its
  // constructor may read `settings()`. An object: its methods, the object made at build time.
  const perCall = typeof impl === 'function';
  if (!perCall && (impl === null || typeof impl !== 'object')) {
    throw new TypeError('exportProvider takes a provider class (MyProvider) or object (new MyProvider())');
  }
  const defaults = new Provider();
  const method = (name) => (...args) => {
    const target = perCall ? new impl() : impl;
    return typeof target[name] === 'function' ? target[name](...args) : defaults[name](...args);
  };
  const discover = method('discover');
  const provision = method('provision');
  const deprovision = method('deprovision');
  return Object.freeze({
    discover: () => run('discover', () => discover(), toClusters),
    provision: (request) =>
      run('provision', () => provision(toProvisionRequest(request)), toProvisionResponse),
    deprovision: (request) =>
      run('deprovision', () => deprovision({ clusterId: request.clusterId, nodeId: request.nodeId }), () => undefined),
  });
}

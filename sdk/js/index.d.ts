// Types of platform-gateway-sdk (contract replicante:platform@0.2.0).

/** The contract this SDK implements. */
export const CONTRACT: 'replicante:platform@0.2.0';

/** A request to create nodes in one node group of a cluster. */
export interface ProvisionRequest {
  /** The same on every retry of one request (from the client's `Idempotency-Key`): an idempotency key. */
  requestId: string;
  /** The cluster the new nodes join. */
  clusterId: string;
  /** The store software (`mongodb`, `zookeeper`, ...). */
  store: string;
  /** The effective store version for the group. */
  storeVersion: string;
  /** The node group the nodes belong to. */
  nodeGroup: string;
  /** The platform-specific class of node (an instance type, a machine size). */
  nodeClass: string;
  /** How many nodes the client wants in the group overall (informational). */
  desiredCount: number;
  /** How many nodes to create now: at least 1. Creating fewer is fine, more is not. */
  count: number;
  /** The cluster's attributes with the group's merged on top, parsed. */
  attributes: Record<string, unknown>;
}

/** What a provision did. */
export interface ProvisionResponse {
  /** How many nodes are being created, 1 to the request's `count`; defaults to `nodeIds.length`. */
  count?: number;
  /** Their IDs when known: exactly `count` distinct, non-empty IDs. */
  nodeIds?: string[];
}

/** A request to terminate one node. */
export interface DeprovisionRequest {
  clusterId: string;
  nodeId: string;
}

/** A node, as discovery reports it. */
export interface Node {
  /** Unique within its cluster, never empty. */
  nodeId: string;
  /** Where the node's Replicante agent listens (`http://10.0.0.7:37000`). */
  agentAddress: string;
  /** Its class (an instance type), when known. */
  nodeClass?: string;
  /** The node group it was provisioned for, when known: report it whenever you can. */
  nodeGroup?: string;
}

/** A cluster and the nodes of it this backend knows about. */
export interface Cluster {
  clusterId: string;
  nodes: Node[];
}

type MaybePromise<T> = T | Promise<T>;

/**
 * The three operations of a Replicante Platform. Extend it and override what the backend does;
 * the others throw `Unsupported` (HTTP 501).
 */
export class Provider {
  discover(): MaybePromise<Cluster[]>;
  provision(request: ProvisionRequest): MaybePromise<ProvisionResponse>;
  deprovision(request: DeprovisionRequest): MaybePromise<void>;
}

/** The generated bindings' shape of the `provider` interface (what `exportProvider` returns). */
export interface ProviderExport {
  discover(): Promise<unknown>;
  provision(request: unknown): Promise<unknown>;
  deprovision(request: unknown): Promise<unknown>;
}

/**
 * The plugin's `provider` export: `export const provider = exportProvider(new MyProvider());`
 * (the name `provider` is required). What a method throws is answered as the matching
 * `provider-error` case; anything but a `ProviderError` is logged and answered `internal`.
 */
export function exportProvider(impl: Partial<Provider> | (new () => Partial<Provider>)): ProviderExport;

/** The base of the errors the gateway answers with a status of their own. */
export class ProviderError extends Error {
  constructor(message: string);
  /** The contract's `provider-error` case. */
  readonly tag: 'invalid-request' | 'not-found' | 'conflict' | 'unsupported' | 'unavailable' | 'internal';
}
/** HTTP 400: the request cannot be served as asked. */
export class InvalidRequest extends ProviderError {}
/** HTTP 404: the node or cluster does not exist on this backend. */
export class NotFound extends ProviderError {}
/** HTTP 409: the request conflicts with the current state. */
export class Conflict extends ProviderError {}
/** HTTP 501: this provider does not do this operation. */
export class Unsupported extends ProviderError {}
/** HTTP 503 (with `Retry-After` when `retryAfter` is given, in seconds): try again later. */
export class Unavailable extends ProviderError {
  constructor(message: string, options?: { retryAfter?: number });
  readonly retryAfter: number | undefined;
}
/** HTTP 500: anything else that went wrong inside the plugin. */
export class Internal extends ProviderError {}

/** The backend's settings (its `settings` table in the gateway config) as an object. */
export function settings(): Record<string, any>;
/** The setting `name`; throws `Internal` naming it when it is missing. */
export function requireSetting(name: string): any;

/** What a `state.update` function returns to leave the value as it is. */
declare const unchanged: unique symbol;

/**
 * The backend's durable key-value state. Keys up to 1 KiB, values up to 1 MiB. A store that
 * cannot serve throws `Unavailable`; a key or value too large throws `Internal`.
 */
export const state: {
  get(key: string): Uint8Array | undefined;
  getString(key: string): string | undefined;
  getJson<T = any>(key: string): T | undefined;
  set(key: string, value: Uint8Array | string): void;
  setJson(key: string, value: unknown): void;
  delete(key: string): void;
  /** Swap `next` in if the value is `expected` (`undefined`: absent / delete). Whether it swapped. */
  compareAndSwap(
    key: string,
    expected: Uint8Array | string | undefined | null,
    next: Uint8Array | string | undefined | null,
  ): boolean;
  /**
   * `compareAndSwap` with JSON values (`undefined`: absent / delete), compared as `setJson`
   * writes them (`JSON.stringify`). Whether it swapped.
   */
  compareAndSwapJson(key: string, expected: unknown, next: unknown): boolean;
  /** One page of keys (at most 1,000). */
  listPage(prefix?: string, options?: { startAfter?: string; limit?: number }): { keys: string[]; next: string | undefined };
  /** Every key with the prefix, all pages read. */
  listKeys(prefix?: string): string[];
  /**
   * Change a JSON value with compare-and-swap, retrying on concurrent changes: `fn` gets the
   * current value (`undefined` when absent) and returns the new one, `undefined` to delete, or
   * `state.unchanged`. `Unavailable` after `attempts` (16) lost races.
   */
  update<T>(key: string, fn: (current: any) => T, options?: { attempts?: number }): T;
  readonly unchanged: typeof unchanged;
};

/** Messages into the gateway's log; objects as JSON, errors with their stack. */
export const log: {
  trace(...parts: unknown[]): void;
  debug(...parts: unknown[]): void;
  info(...parts: unknown[]): void;
  warn(...parts: unknown[]): void;
  error(...parts: unknown[]): void;
};

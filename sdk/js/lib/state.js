// Durable key-value state, private to the backend: bytes, with string and JSON conveniences.

import * as wit from 'replicante:platform/state@0.2.0';
import { requireCall } from './call.js';
import { Internal, Unavailable } from './errors.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * A `state-error` of the host (thrown by the generated bindings with the variant as `payload`)
 * as a `ProviderError`: `unavailable` as `Unavailable`, `too-large` as `Internal`.
 */
function translate(operation, key, error) {
  const payload = error !== null && typeof error === 'object' ? error.payload : undefined;
  const where = key === undefined ? `state ${operation}` : `state ${operation} \`${key}\``;
  if (payload && payload.tag === 'unavailable') {
    return new Unavailable(`${where}: the store is unavailable: ${payload.val}`);
  }
  if (payload && payload.tag === 'too-large') {
    return new Internal(`${where}: too large: ${payload.val}`);
  }
  return error;
}

function call(operation, key, f) {
  requireCall(`state (${operation})`);
  try {
    return f();
  } catch (e) {
    throw translate(operation, key, e);
  }
}

/** A value to store as bytes: a Uint8Array (or other ArrayBuffer view) as it is, a string as UTF-8. */
function bytes(value, what) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return encoder.encode(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError(`${what} must be a Uint8Array or a string, not ${value === null ? 'null' : typeof value}`);
}

function optionalBytes(value, what) {
  return value === undefined || value === null ? undefined : bytes(value, what);
}

function text(key, value) {
  try {
    return decoder.decode(value);
  } catch {
    throw new Internal(`state \`${key}\` is not UTF-8 text`);
  }
}

function parse(key, value) {
  const t = text(key, value);
  try {
    return JSON.parse(t);
  } catch (e) {
    throw new Internal(`state \`${key}\` is not JSON: ${e.message}`);
  }
}

function serialize(key, value) {
  const t = JSON.stringify(value);
  if (t === undefined) throw new TypeError(`state \`${key}\`: ${typeof value} cannot be stored as JSON`);
  return encoder.encode(t);
}

const PAGE_LIMIT = 1000;

/**
 * The backend's durable state. Keys are strings (up to 1 KiB), values bytes (up to 1 MiB). A
 * store that cannot serve throws `Unavailable` (HTTP 503); a key or value too large throws
 * `Internal`.
 */
export const state = Object.freeze({
  /**
   * The value under `key` as bytes, or `undefined` when there is none.
   * @param {string} key
   * @returns {Uint8Array | undefined}
   */
  get(key) {
    return call('get', key, () => wit.get(key)) ?? undefined;
  },

  /**
   * The value under `key` as UTF-8 text, or `undefined`.
   * @param {string} key
   */
  getString(key) {
    const value = state.get(key);
    return value === undefined ? undefined : text(key, value);
  },

  /**
   * The value under `key` parsed as JSON, or `undefined`.
   * @param {string} key
   */
  getJson(key) {
    const value = state.get(key);
    return value === undefined ? undefined : parse(key, value);
  },

  /**
   * Store `value` (bytes, or a string as UTF-8) under `key`, replacing any previous value.
   * @param {string} key
   * @param {Uint8Array | string} value
   */
  set(key, value) {
    const b = bytes(value, 'value');
    call('set', key, () => wit.set(key, b));
  },

  /**
   * Store `value` as JSON under `key`.
   * @param {string} key
   * @param {unknown} value
   */
  setJson(key, value) {
    const b = serialize(key, value);
    call('set', key, () => wit.set(key, b));
  },

  /**
   * Remove `key` (a missing key is not an error).
   * @param {string} key
   */
  delete(key) {
    call('delete', key, () => wit.delete(key));
  },

  /**
   * Atomically replace the value under `key` with `next` if, and only if, the current value is
   * `expected`. `undefined` (or `null`) as `expected` means "absent", as `next` "delete the key".
   * Strings are compared and stored as UTF-8. Whether the swap happened.
   *
   * @param {string} key
   * @param {Uint8Array | string | undefined | null} expected
   * @param {Uint8Array | string | undefined | null} next
   * @returns {boolean}
   */
  compareAndSwap(key, expected, next) {
    const e = optionalBytes(expected, 'expected');
    const n = optionalBytes(next, 'next');
    return call('compare-and-swap', key, () => wit.compareAndSwap(key, e, n));
  },

  /**
   * `compareAndSwap` with JSON values (`undefined` or `null`: absent): the swap happens only if
   * the stored bytes are exactly `JSON.stringify(expected)`, so a value read with `getJson` and
   * written by `setJson` or this function compares equal (JSON keeps the keys' order). Whether
   * the swap happened.
   *
   * @param {string} key
   * @param {unknown} expected
   * @param {unknown} next
   * @returns {boolean}
   */
  compareAndSwapJson(key, expected, next) {
    const e = expected === undefined || expected === null ? undefined : serialize(key, expected);
    const n = next === undefined || next === null ? undefined : serialize(key, next);
    return call('compare-and-swap', key, () => wit.compareAndSwap(key, e, n));
  },

  /**
   * One page of the keys that start with `prefix`, after `startAfter`, in ascending byte order:
   * `{ keys, next }`, `next` being the `startAfter` of the next page (`undefined` on the last).
   *
   * @param {string} [prefix]
   * @param {{ startAfter?: string, limit?: number }} [options] `limit`: at most 1,000 (the default).
   * @returns {{ keys: string[], next: string | undefined }}
   */
  listPage(prefix = '', { startAfter, limit = PAGE_LIMIT } = {}) {
    const page = call('list-keys', undefined, () => wit.listKeys(prefix, startAfter ?? undefined, limit));
    return { keys: page.keys, next: page.next ?? undefined };
  },

  /**
   * Every key that starts with `prefix`, in ascending byte order, reading page after page.
   * @param {string} [prefix]
   * @returns {string[]}
   */
  listKeys(prefix = '') {
    const keys = [];
    let startAfter;
    for (;;) {
      const page = state.listPage(prefix, { startAfter });
      keys.push(...page.keys);
      if (page.next === undefined || page.keys.length === 0) return keys;
      startAfter = page.next;
    }
  },

  /**
   * Change the JSON value under `key` with compare-and-swap, safely against concurrent calls:
   * read it, compute `fn(current)` (`current` is `undefined` when absent), and swap it in if
   * nobody changed it meanwhile, else try again with the newer value. `fn` returns the new value,
   * `undefined` to delete the key, or `state.unchanged` to leave it as it is; it may throw to
   * give up (the error reaches the caller). Gives up with `Unavailable` after `attempts` tries.
   * Returns what `fn` returned last.
   *
   * @template T
   * @param {string} key
   * @param {(current: any) => T} fn
   * @param {{ attempts?: number }} [options] `attempts`: 16 by default.
   * @returns {T}
   */
  update(key, fn, { attempts = 16 } = {}) {
    for (let attempt = 0; attempt < Math.max(1, attempts); attempt++) {
      const raw = state.get(key);
      const current = raw === undefined ? undefined : parse(key, raw);
      const next = fn(current);
      if (next === UNCHANGED) return next;
      const encoded = next === undefined ? undefined : serialize(key, next);
      if (raw === undefined && encoded === undefined) return next;
      if (state.compareAndSwap(key, raw, encoded)) return next;
    }
    throw new Unavailable(
      `state \`${key}\` kept changing under concurrent calls (${attempts} attempts); try again`,
      { retryAfter: 1 },
    );
  },

  /** What an `update` function returns to leave the value as it is. */
  get unchanged() {
    return UNCHANGED;
  },
});

const UNCHANGED = Object.freeze({ toString: () => 'state.unchanged' });

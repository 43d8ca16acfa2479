// The in-memory host behind the testing imports: settings, log lines and state a test sets and
// inspects. One per process; call `host.reset()` between tests.

/** What the generated bindings throw for an import's `err`: the variant is its `payload`. */
export class ComponentError extends Error {
  constructor(payload) {
    super(`${payload.tag}: ${payload.val}`);
    this.payload = payload;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const host = {
  /** The backend's settings, as `settings.get()` gives them (JSON-encoded). */
  settings: {},
  /** Every log line: `{ level, message }`. */
  logs: [],
  /** The state: key to bytes. */
  store: new Map(),
  /**
   * When set, `(operation, key) => payload | undefined` runs before each state call; a
   * `{ tag: 'unavailable' | 'too-large', val }` it returns is thrown as that `state-error`. It may
   * also change `host.store`, to make a compare-and-swap lose a race.
   */
  beforeStateCall: undefined,

  /** Forget everything; start with `settings`. */
  reset({ settings = {} } = {}) {
    host.settings = settings;
    host.logs = [];
    host.store = new Map();
    host.beforeStateCall = undefined;
  },

  /** The messages logged at `level` (all levels when none). */
  logged(level) {
    return host.logs.filter((l) => level === undefined || l.level === level).map((l) => l.message);
  },

  /** The JSON value stored under `key`, or `undefined`. */
  getJson(key) {
    const value = host.store.get(key);
    return value === undefined ? undefined : JSON.parse(decoder.decode(value));
  },

  /** Store `value` as JSON under `key`. */
  setJson(key, value) {
    host.store.set(key, encoder.encode(JSON.stringify(value)));
  },

  /** The keys in ascending byte order. */
  keys() {
    return [...host.store.keys()].sort(host.compareKeys);
  },

  compareKeys(a, b) {
    return Buffer.compare(Buffer.from(a), Buffer.from(b));
  },

  checkValue(value) {
    if (!(value instanceof Uint8Array)) throw new TypeError('a state value must be a Uint8Array');
    if (value.length > 1024 * 1024) {
      throw new ComponentError({ tag: 'too-large', val: `a value is at most 1 MiB, not ${value.length} bytes` });
    }
    return new Uint8Array(value);
  },
};

/** Run a state operation as the host would: the key checked, the test's hook first. */
export function stateCall(operation, key, f) {
  if (typeof key !== 'string') throw new TypeError('a state key must be a string');
  const failure = host.beforeStateCall?.(operation, key);
  if (failure) throw new ComponentError(failure);
  if (Buffer.byteLength(key) > 1024) {
    throw new ComponentError({ tag: 'too-large', val: `a key is at most 1 KiB, not ${Buffer.byteLength(key)} bytes` });
  }
  return f(host.store);
}

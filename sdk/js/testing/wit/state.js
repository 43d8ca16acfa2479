// `replicante:platform/state@0.2.0`, in memory.
import { host, stateCall } from '../host.js';

export function get(key) {
  return stateCall('get', key, (store) => {
    const value = store.get(key);
    return value === undefined ? undefined : new Uint8Array(value);
  });
}

export function set(key, value) {
  return stateCall('set', key, (store) => {
    store.set(key, host.checkValue(value));
  });
}

function remove(key) {
  return stateCall('delete', key, (store) => {
    store.delete(key);
  });
}
export { remove as delete };

export function compareAndSwap(key, expected, next) {
  return stateCall('compare-and-swap', key, (store) => {
    const current = store.get(key);
    const same =
      expected === undefined
        ? current === undefined
        : current !== undefined && Buffer.compare(Buffer.from(current), Buffer.from(expected)) === 0;
    if (!same) return false;
    if (next === undefined) store.delete(key);
    else store.set(key, host.checkValue(next));
    return true;
  });
}

export function listKeys(prefix, startAfter, limit) {
  return stateCall('list-keys', prefix, (store) => {
    const max = limit === 0 || limit > 1000 ? 1000 : limit;
    const keys = host
      .keys()
      .filter((k) => k.startsWith(prefix) && (startAfter === undefined || host.compareKeys(k, startAfter) > 0));
    const page = keys.slice(0, max);
    return { keys: page, next: keys.length > max ? page[page.length - 1] : undefined };
  });
}

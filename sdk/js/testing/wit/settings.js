// `replicante:platform/settings@0.2.0`, in memory.
import { host } from '../host.js';

export function get() {
  return JSON.stringify(host.settings);
}

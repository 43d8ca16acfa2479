// `replicante:platform/log@0.2.0`, in memory.
import { host } from '../host.js';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

export function log(level, message) {
  if (!LEVELS.includes(level)) throw new TypeError(`"${level}" is not one of the cases of level`);
  if (typeof message !== 'string') throw new TypeError('message must be a string');
  host.logs.push({ level, message });
}

// Logging into the gateway's log, where each line is tagged with the backend and the request.

import { log as emit } from 'replicante:platform/log@0.2.0';
import { requireCall } from './call.js';

/** One value of a log call as text: strings as they are, errors with their stack, others as JSON. */
function text(value) {
  if (typeof value === 'string') return value;
  if (value instanceof Error) return value.stack ? `${value}\n${value.stack}`.trimEnd() : String(value);
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return String(value);
  try {
    return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v)) ?? String(value);
  } catch {
    return String(value);
  }
}

function at(level) {
  return (...parts) => {
    requireCall(`log.${level}()`);
    emit(level, parts.map(text).join(' '));
  };
}

/**
 * Messages into the gateway's log at a level (cut at 4 KiB by the gateway). Several arguments are
 * joined with spaces; objects are written as JSON, errors with their stack.
 */
export const log = Object.freeze({
  trace: at('trace'),
  debug: at('debug'),
  info: at('info'),
  warn: at('warn'),
  error: at('error'),
});

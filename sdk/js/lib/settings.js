// The backend's settings: the `settings` table of its entry in the gateway config, as JSON.

import { get } from 'replicante:platform/settings@0.2.0';
import { requireCall } from './call.js';
import { Internal } from './errors.js';

let cached;

/** Forget the settings read in a previous call (the SDK calls it as each operation starts). */
export function resetSettings() {
  cached = undefined;
}

/**
 * The backend's settings as a plain object (`{}` when it has none), parsed once per call. TOML
 * tables are objects, arrays are arrays, dates and times are strings.
 *
 * @returns {Record<string, any>}
 */
export function settings() {
  requireCall('settings()');
  if (cached === undefined) {
    const text = get();
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw new Internal(`the gateway sent settings that are not JSON: ${e.message}`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new Internal('the gateway sent settings that are not a JSON object');
    }
    cached = parsed;
  }
  return cached;
}

/**
 * The setting `name`; throws `Internal` naming it when it is missing, so that a backend
 * configured without it answers with a message the operator can act on.
 *
 * @param {string} name
 */
export function requireSetting(name) {
  const all = settings();
  if (!Object.prototype.hasOwnProperty.call(all, name) || all[name] === null) {
    throw new Internal(`setting \`${name}\` is missing from the backend's settings`);
  }
  return all[name];
}

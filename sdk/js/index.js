// platform-gateway-sdk: write platform-gateway plugins (contract replicante:platform@0.2.0) in
// JavaScript. See README.md and docs/plugins.md in the repository.

export { Provider, exportProvider } from './lib/provider.js';
export {
  ProviderError,
  InvalidRequest,
  NotFound,
  Conflict,
  Unsupported,
  Unavailable,
  Internal,
} from './lib/errors.js';
export { settings, requireSetting } from './lib/settings.js';
export { state } from './lib/state.js';
export { log } from './lib/log.js';

/** The contract this SDK implements. */
export const CONTRACT = 'replicante:platform@0.2.0';

// platform-gateway-sdk/testing: the in-memory host a plugin's tests run against under Node.js.
//
//   node --import platform-gateway-sdk/testing/register --test
//
// Then `import { provider } from '../src/index.js'` calls the plugin as the gateway would: each
// method returns the contract's `{ tag: 'ok' | 'err', val }`.

import { enterCall } from '../lib/call.js';

export { host, ComponentError } from './host.js';

// Under Node.js a test may use settings, state and log directly, outside a provider call.
enterCall();

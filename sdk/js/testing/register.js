// `node --import platform-gateway-sdk/testing/register`: resolve the contract's imports
// (`replicante:platform/...@0.2.0`) to the in-memory host of `platform-gateway-sdk/testing`, so
// that a plugin's code runs under plain Node.js (node:test) without building a component.

import { register } from 'node:module';

register('./hooks.js', import.meta.url);

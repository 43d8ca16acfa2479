// Module resolution hooks (see register.js).

const MODULES = {
  'replicante:platform/settings@0.2.0': 'settings',
  'replicante:platform/log@0.2.0': 'log',
  'replicante:platform/state@0.2.0': 'state',
};

export async function resolve(specifier, context, next) {
  const name = MODULES[specifier];
  if (name !== undefined) {
    return { url: new URL(`./wit/${name}.js`, import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}

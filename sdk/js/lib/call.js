// Whether a call of the gateway is under way. The gateway's imports (settings, state, log) exist
// only during one: the top level of a plugin's modules runs when componentize-js builds the
// component, where calling them would trap with nothing but a WebAssembly backtrace.

let during = false;

/** A call starts (the SDK's export does it; so does the testing host, for its whole process). */
export function enterCall() {
  during = true;
}

/** Throw a clear error when `what` is used outside a call. */
export function requireCall(what) {
  if (!during) {
    throw new Error(
      `${what} is only available during a call (discover, provision, deprovision), not at the ` +
        'top level of a module: that runs once, when the component is built, without a gateway',
    );
  }
}

// The errors a provider throws, and their translation into the contract's `provider-error`.

/**
 * The base of every error the gateway answers with a status of its own. Throw one of its
 * subclasses; anything else a provider throws is answered as `Internal` (HTTP 500).
 */
export class ProviderError extends Error {
  /** @param {string} message What went wrong, for the operator reading it. */
  constructor(message) {
    super(String(message));
  }

  /** The case of the contract's `provider-error` variant. */
  get tag() {
    return 'internal';
  }

  /** The error as the contract's `provider-error` variant. */
  toWit() {
    return { tag: this.tag, val: this.message };
  }
}

/** The request cannot be served as asked (an unknown node class, a bad attribute). HTTP 400. */
export class InvalidRequest extends ProviderError {
  get tag() {
    return 'invalid-request';
  }
}

/** The node or cluster does not exist on this backend. HTTP 404. */
export class NotFound extends ProviderError {
  get tag() {
    return 'not-found';
  }
}

/** The request conflicts with the current state (the node is being removed already). HTTP 409. */
export class Conflict extends ProviderError {
  get tag() {
    return 'conflict';
  }
}

/** This provider does not do this operation at all. HTTP 501. */
export class Unsupported extends ProviderError {
  get tag() {
    return 'unsupported';
  }
}

const U32_MAX = 0xffffffff;

/**
 * The backend cannot serve now but may later (no free capacity, an API is down). HTTP 503, with
 * `Retry-After` set to `retryAfter` seconds when given (else the gateway's default).
 */
export class Unavailable extends ProviderError {
  /**
   * @param {string} message
   * @param {{ retryAfter?: number }} [options] `retryAfter`: when to try again, in seconds.
   */
  constructor(message, { retryAfter } = {}) {
    super(message);
    /** @type {number | undefined} */
    this.retryAfter = undefined;
    if (retryAfter !== undefined && retryAfter !== null) {
      const seconds = Math.ceil(Number(retryAfter));
      if (Number.isFinite(seconds)) this.retryAfter = Math.min(Math.max(seconds, 0), U32_MAX);
    }
  }

  get tag() {
    return 'unavailable';
  }

  toWit() {
    return { tag: 'unavailable', val: { message: this.message, retryAfterSeconds: this.retryAfter } };
  }
}

/** Anything else that went wrong inside the plugin. HTTP 500. */
export class Internal extends ProviderError {
  get tag() {
    return 'internal';
  }
}

// Names set by hand: a bundler may rename the classes.
for (const [type, name] of [
  [ProviderError, 'ProviderError'],
  [InvalidRequest, 'InvalidRequest'],
  [NotFound, 'NotFound'],
  [Conflict, 'Conflict'],
  [Unsupported, 'Unsupported'],
  [Unavailable, 'Unavailable'],
  [Internal, 'Internal'],
]) {
  Object.defineProperty(type.prototype, 'name', { value: name, writable: true, configurable: true });
}

const TAGS = new Set([
  'invalid-request',
  'not-found',
  'conflict',
  'unsupported',
  'unavailable',
  'internal',
]);

/** A short description of a thrown value that is not an Error. */
function describe(value) {
  if (typeof value === 'string') return value;
  try {
    const text = JSON.stringify(value);
    if (text !== undefined) return text;
  } catch {
    // A cycle or a BigInt: fall back to String().
  }
  return String(value);
}

/**
 * The contract's `provider-error` for anything a provider threw: a `ProviderError` as its case;
 * a raw `{ tag, val }` of the generated bindings as it is; anything else as `internal` with its
 * message, after logging it (with its stack) through `report`.
 *
 * @param {unknown} error
 * @param {(text: string) => void} report
 */
export function toProviderError(error, report) {
  if (error instanceof ProviderError) return error.toWit();
  if (
    error !== null &&
    typeof error === 'object' &&
    !(error instanceof Error) &&
    TAGS.has(/** @type {any} */ (error).tag)
  ) {
    const { tag, val } = /** @type {any} */ (error);
    if (tag === 'unavailable') {
      const message = typeof val === 'string' ? val : String(val?.message ?? '');
      return new Unavailable(message, { retryAfter: val?.retryAfterSeconds }).toWit();
    }
    return { tag, val: String(val ?? '') };
  }
  let message;
  if (error instanceof Error) {
    message = `${error.name}: ${error.message}`;
    const stack = typeof error.stack === 'string' && error.stack.trim() ? `\n${error.stack.trimEnd()}` : '';
    report(`uncaught ${message}${stack}`);
  } else {
    message = `uncaught exception: ${describe(error)}`;
    report(message);
  }
  return { tag: 'internal', val: message };
}

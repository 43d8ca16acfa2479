// The SDK under Node.js against the in-memory host: `npm test` in sdk/js.

import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import {
  Conflict,
  Internal,
  InvalidRequest,
  NotFound,
  Provider,
  ProviderError,
  Unavailable,
  Unsupported,
  exportProvider,
  log,
  requireSetting,
  settings,
  state,
} from '../index.js';
import { host } from '../testing/index.js';

beforeEach(() => host.reset());

const request = {
  requestId: 'r1',
  clusterId: 'c1',
  store: 'mongodb',
  storeVersion: '4.0',
  nodeGroup: 'data',
  nodeClass: 'small',
  desiredCount: 3,
  count: 2,
  attributes: '{"zone":"a"}',
};

describe('the export boundary', () => {
  test('a provider that overrides nothing answers unsupported', async () => {
    const provider = exportProvider(new Provider());
    for (const answer of [
      await provider.discover(),
      await provider.provision(request),
      await provider.deprovision({ clusterId: 'c1', nodeId: 'n1' }),
    ]) {
      assert.equal(answer.tag, 'err');
      assert.equal(answer.val.tag, 'unsupported');
    }
  });

  test('a class is instantiated at the start of every call, as in Python', async () => {
    let made = 0;
    class P extends Provider {
      constructor() {
        super();
        made += 1;
        this.machines = settings().machines;
      }
      discover() {
        return [{ clusterId: 'c1', nodes: this.machines.map((m) => ({ nodeId: m.id, agentAddress: 'http://a' })) }];
      }
    }
    host.reset({ settings: { machines: [{ id: 'm1' }] } });
    const provider = exportProvider(P);
    assert.equal(made, 0);
    assert.equal((await provider.discover()).val[0].nodes[0].nodeId, 'm1');
    assert.equal((await provider.discover()).tag, 'ok');
    assert.equal(made, 2);
    assert.equal((await provider.provision(request)).val.tag, 'unsupported');
  });

  test('answers are shaped as the contract records', async () => {
    class P extends Provider {
      discover() {
        return [{ clusterId: 'c1', nodes: [{ nodeId: 'n1', agentAddress: 'http://a', nodeGroup: 'data', extra: 1 }] }];
      }
      async provision(r) {
        assert.deepEqual(r.attributes, { zone: 'a' });
        assert.equal(r.requestId, 'r1');
        return { nodeIds: ['n1', 'n2'] };
      }
      deprovision() {}
    }
    const provider = exportProvider(new P());
    assert.deepEqual(await provider.discover(), {
      tag: 'ok',
      val: [
        {
          clusterId: 'c1',
          nodes: [{ nodeId: 'n1', agentAddress: 'http://a', nodeClass: undefined, nodeGroup: 'data' }],
        },
      ],
    });
    assert.deepEqual(await provider.provision(request), { tag: 'ok', val: { count: 2, nodeIds: ['n1', 'n2'] } });
    assert.deepEqual(await provider.deprovision({ clusterId: 'c1', nodeId: 'n1' }), { tag: 'ok', val: undefined });
  });

  test('each error class becomes its case, with the retry hint of Unavailable', async () => {
    const cases = [
      [new InvalidRequest('bad'), { tag: 'invalid-request', val: 'bad' }],
      [new NotFound('gone'), { tag: 'not-found', val: 'gone' }],
      [new Conflict('busy'), { tag: 'conflict', val: 'busy' }],
      [new Unsupported('no'), { tag: 'unsupported', val: 'no' }],
      [new Unavailable('full'), { tag: 'unavailable', val: { message: 'full', retryAfterSeconds: undefined } }],
      [new Unavailable('full', { retryAfter: 2.5 }), { tag: 'unavailable', val: { message: 'full', retryAfterSeconds: 3 } }],
      [new Internal('oops'), { tag: 'internal', val: 'oops' }],
      [{ tag: 'not-found', val: 'raw' }, { tag: 'not-found', val: 'raw' }],
    ];
    for (const [error, expected] of cases) {
      const provider = exportProvider({
        deprovision() {
          throw error;
        },
      });
      assert.deepEqual(await provider.deprovision({ clusterId: 'c', nodeId: 'n' }), { tag: 'err', val: expected });
      if (error instanceof Error) {
        assert.ok(error instanceof ProviderError);
        assert.equal(error.name, error.constructor.name);
      }
    }
    assert.deepEqual(host.logged('error'), [], 'a ProviderError is an answer, not a crash');
  });

  test('anything else thrown becomes internal, its stack logged at error', async () => {
    const provider = exportProvider({
      async discover() {
        null.boom;
      },
      provision() {
        throw 'a string';
      },
    });
    const answer = await provider.discover();
    assert.equal(answer.tag, 'err');
    assert.equal(answer.val.tag, 'internal');
    assert.match(answer.val.val, /^TypeError: /);
    const [line] = host.logged('error');
    assert.match(line, /^discover: uncaught TypeError: .*\n.*sdk\.test\.js/s);

    assert.deepEqual(await provider.provision(request), {
      tag: 'err',
      val: { tag: 'internal', val: 'uncaught exception: a string' },
    });
  });

  test('an answer of the wrong shape is internal, naming what is wrong', async () => {
    const provider = exportProvider({
      discover: () => [{ clusterId: 'c1', nodes: [{ nodeId: 7, agentAddress: 'x' }] }],
      provision: () => ({ count: 'two' }),
    });
    const discovered = await provider.discover();
    assert.equal(discovered.val.tag, 'internal');
    assert.match(discovered.val.val, /cluster `c1` node 0: nodeId must be a string, not number/);
    const provisioned = await provider.provision(request);
    assert.match(provisioned.val.val, /provision: count must be a whole number/);
  });

  test('a snake_case or unknown key is named, not read as a missing value', async () => {
    const provider = exportProvider({
      discover: () => [{ clusterId: 'c1', nodes: [{ node_id: 'n1', agentAddress: 'x' }] }],
      provision: () => ({ node_ids: ['n1'] }),
    });
    const discovered = await provider.discover();
    assert.match(discovered.val.val, /node 0 has `node_id`: the SDK's records are camelCase, say `nodeId`/);
    const provisioned = await provider.provision(request);
    assert.equal(provisioned.val.tag, 'internal');
    assert.match(provisioned.val.val, /the answer has an unknown key `node_ids` .*did you mean `nodeIds`\?/);
  });
});

describe('settings', () => {
  test('are the parsed object, and a missing one is named', async () => {
    host.settings = { machines: [{ id: 'm1' }], region: 'eu' };
    assert.deepEqual(settings(), { machines: [{ id: 'm1' }], region: 'eu' });
    assert.equal(requireSetting('region'), 'eu');
    assert.throws(() => requireSetting('zone'), (e) => e instanceof Internal && /`zone`/.test(e.message));
  });

  test('are read again at each call', async () => {
    const provider = exportProvider({ discover: () => [{ clusterId: settings().name, nodes: [] }] });
    host.settings = { name: 'one' };
    assert.equal((await provider.discover()).val[0].clusterId, 'one');
    host.settings = { name: 'two' };
    assert.equal((await provider.discover()).val[0].clusterId, 'two');
  });
});

describe('state', () => {
  test('bytes, strings and JSON', () => {
    assert.equal(state.get('k'), undefined);
    state.set('k', new Uint8Array([1, 2, 3]));
    assert.deepEqual(state.get('k'), new Uint8Array([1, 2, 3]));
    state.set('s', 'héllo');
    assert.equal(state.getString('s'), 'héllo');
    state.setJson('j', { a: [1, 2] });
    assert.deepEqual(state.getJson('j'), { a: [1, 2] });
    assert.throws(() => state.getJson('s'), (e) => e instanceof Internal && /state `s` is not JSON/.test(e.message));
    state.delete('k');
    state.delete('k');
    assert.equal(state.get('k'), undefined);
  });

  test('compare-and-swap: absent, equal, different', () => {
    assert.equal(state.compareAndSwap('k', undefined, 'v1'), true);
    assert.equal(state.compareAndSwap('k', undefined, 'v2'), false);
    assert.equal(state.compareAndSwap('k', 'v0', 'v2'), false);
    assert.equal(state.compareAndSwap('k', 'v1', 'v2'), true);
    assert.equal(state.getString('k'), 'v2');
    assert.equal(state.compareAndSwap('k', new TextEncoder().encode('v2'), null), true);
    assert.equal(state.get('k'), undefined);
  });

  test('compareAndSwapJson compares as setJson writes', () => {
    assert.equal(state.compareAndSwapJson('j', undefined, { a: 1, b: [2] }), true);
    assert.equal(state.compareAndSwapJson('j', undefined, { a: 2 }), false);
    const current = state.getJson('j');
    assert.equal(state.compareAndSwapJson('j', { a: 9 }, { a: 2 }), false);
    assert.equal(state.compareAndSwapJson('j', current, { a: 2 }), true);
    assert.deepEqual(state.getJson('j'), { a: 2 });
    assert.equal(state.compareAndSwapJson('j', { a: 2 }, undefined), true);
    assert.equal(state.get('j'), undefined);
  });

  test('listKeys reads every page', () => {
    for (let i = 0; i < 2500; i++) host.store.set(`item/${String(i).padStart(5, '0')}`, new Uint8Array());
    host.store.set('other', new Uint8Array());
    let pages = 0;
    host.beforeStateCall = (operation) => {
      if (operation === 'list-keys') pages++;
    };
    const keys = state.listKeys('item/');
    assert.equal(keys.length, 2500);
    assert.equal(keys[0], 'item/00000');
    assert.equal(keys[2499], 'item/02499');
    assert.equal(pages, 3);
    assert.deepEqual(state.listPage('item/', { startAfter: 'item/02497', limit: 10 }), {
      keys: ['item/02498', 'item/02499'],
      next: undefined,
    });
  });

  test('update retries when another call changed the value meanwhile', () => {
    state.setJson('counter', 1);
    let interfere = 2;
    host.beforeStateCall = (operation, key) => {
      if (operation === 'compare-and-swap' && interfere > 0) {
        interfere--;
        host.setJson(key, host.getJson(key) + 10);
      }
    };
    const seen = [];
    const result = state.update('counter', (n) => {
      seen.push(n);
      return n + 1;
    });
    assert.deepEqual(seen, [1, 11, 21]);
    assert.equal(result, 22);
    assert.equal(host.getJson('counter'), 22);
  });

  test('update creates, deletes, leaves unchanged, and gives up with Unavailable', () => {
    assert.deepEqual(state.update('list', (l) => [...(l ?? []), 'a']), ['a']);
    assert.equal(state.update('list', () => state.unchanged), state.unchanged);
    assert.deepEqual(host.getJson('list'), ['a']);
    assert.equal(state.update('list', () => undefined), undefined);
    assert.equal(host.store.has('list'), false);

    host.setJson('hot', 0);
    host.beforeStateCall = (operation, key) => {
      if (operation === 'compare-and-swap') host.setJson(key, host.getJson(key) + 1);
    };
    assert.throws(
      () => state.update('hot', (n) => n, { attempts: 3 }),
      (e) => e instanceof Unavailable && e.retryAfter === 1 && /kept changing/.test(e.message),
    );
  });

  test('state errors are Unavailable or Internal, and reach the caller as such', async () => {
    host.beforeStateCall = () => ({ tag: 'unavailable', val: 'etcd is unreachable' });
    assert.throws(
      () => state.get('k'),
      (e) => e instanceof Unavailable && e.message === 'state get `k`: the store is unavailable: etcd is unreachable',
    );
    host.beforeStateCall = undefined;
    assert.throws(() => state.set('x'.repeat(2000), 'v'), (e) => e instanceof Internal && /too large/.test(e.message));

    host.beforeStateCall = () => ({ tag: 'unavailable', val: 'down' });
    const provider = exportProvider({ discover: () => state.listKeys('') });
    const answer = await provider.discover();
    assert.equal(answer.val.tag, 'unavailable');
    assert.match(answer.val.val.message, /down/);
  });
});

test('log writes at each level, joining its arguments', () => {
  log.debug('a', 1, { b: true });
  log.warn('careful');
  log.error(new Error('bad'));
  assert.deepEqual(host.logs.slice(0, 2), [
    { level: 'debug', message: 'a 1 {"b":true}' },
    { level: 'warn', message: 'careful' },
  ]);
  assert.match(host.logs[2].message, /^Error: bad\n/);
});

test('the gateway outside a call (at the top level: build time) is a clear error', async () => {
  const { spawnSync } = await import('node:child_process');
  // A process that never imports the testing host, so no call is under way.
  const script = "import('./index.js').then((sdk) => sdk.settings())";
  const child = spawnSync(process.execPath, ['--import', './testing/register.js', '-e', script], {
    cwd: new URL('..', import.meta.url),
    encoding: 'utf8',
  });
  assert.notEqual(child.status, 0);
  assert.match(child.stderr, /settings\(\) is only available during a call .* not at the top level of a module/);
});

// The provider's logic under Node.js, against the SDK's in-memory host (`npm test`): the calls
// are the ones the gateway makes, answered as the contract's `{ tag: 'ok' | 'err', val }`.

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { host } from 'platform-gateway-sdk/testing';
import { provider } from '../src/index.js';

const machines = [
  { id: 'm1', agent_address: 'http://10.0.0.1:37000', node_class: 'small' },
  { id: 'm2', agent_address: 'http://10.0.0.2:37000', node_class: 'small' },
  { id: 'm3', agent_address: 'http://10.0.0.3:37000', node_class: 'small' },
  { id: 'b1', agent_address: 'http://10.0.1.1:37000', node_class: 'large' },
];

beforeEach(() => host.reset({ settings: { machines } }));

let requests = 0;
function request(fields = {}) {
  requests++;
  return {
    requestId: `request-${requests}`,
    clusterId: 'c1',
    store: 'mongodb',
    storeVersion: '4.0',
    nodeGroup: 'data',
    nodeClass: 'small',
    desiredCount: 3,
    count: 1,
    attributes: '{}',
    ...fields,
  };
}

test('provisioned machines are discovered with their group and class until deprovisioned', async () => {
  const answer = await provider.provision(request({ count: 2 }));
  assert.deepEqual(answer, { tag: 'ok', val: { count: 2, nodeIds: ['m1', 'm2'] } });

  const discovered = await provider.discover();
  assert.deepEqual(discovered.val, [
    {
      clusterId: 'c1',
      nodes: [
        { nodeId: 'm1', agentAddress: 'http://10.0.0.1:37000', nodeClass: 'small', nodeGroup: 'data' },
        { nodeId: 'm2', agentAddress: 'http://10.0.0.2:37000', nodeClass: 'small', nodeGroup: 'data' },
      ],
    },
  ]);

  const elsewhere = await provider.deprovision({ clusterId: 'c2', nodeId: 'm1' });
  assert.equal(elsewhere.val.tag, 'not-found');
  for (const nodeId of ['m1', 'm2']) {
    assert.equal((await provider.deprovision({ clusterId: 'c1', nodeId })).tag, 'ok');
  }
  assert.deepEqual((await provider.discover()).val, []);
  const again = await provider.deprovision({ clusterId: 'c1', nodeId: 'm1' });
  assert.equal(again.val.tag, 'not-found');
});

test('fewer machines than asked is an answer; none is unavailable', async () => {
  assert.deepEqual((await provider.provision(request({ count: 5 }))).val, { count: 3, nodeIds: ['m1', 'm2', 'm3'] });
  assert.ok(host.logged('warn').some((m) => m.includes('asked for 5 machines of class `small`, 3 were free')));
  const none = await provider.provision(request());
  assert.equal(none.val.tag, 'unavailable');
  assert.equal(none.val.val.retryAfterSeconds, 60);
  assert.match(none.val.val.message, /no free machine of node class `small`: all 3 are allocated/);
});

test('an unknown node class is an invalid request naming the classes offered', async () => {
  const answer = await provider.provision(request({ nodeClass: 'huge' }));
  assert.deepEqual(answer.val, {
    tag: 'invalid-request',
    val: 'the inventory has no machine of node class `huge` (it has `small`, `large`)',
  });
});

test('a retried request gets the machines it got the first time', async () => {
  const first = request({ count: 2 });
  assert.deepEqual((await provider.provision(first)).val.nodeIds, ['m1', 'm2']);
  assert.deepEqual((await provider.provision(first)).val.nodeIds, ['m1', 'm2']);
  assert.deepEqual((await provider.provision(request())).val.nodeIds, ['m3']);
});

test('a machine taken by a concurrent call between the read and the swap is not handed out twice', async () => {
  // Another provision takes m1 just before this one's compare-and-swap on it.
  host.beforeStateCall = (operation, key) => {
    if (operation === 'compare-and-swap' && key === 'machine/m1' && !host.store.has(key)) {
      host.setJson(key, { clusterId: 'other', nodeGroup: 'data', nodeClass: 'small', agentAddress: 'x', requestId: 'x' });
    }
  };
  assert.deepEqual((await provider.provision(request())).val, { count: 1, nodeIds: ['m2'] });
  assert.equal(host.getJson('machine/m1').clusterId, 'other');
});

test('bad settings and an unavailable store are answered, not crashed on', async () => {
  host.settings = { machines: [{ id: 'm1', node_class: 'small' }] };
  const bad = await provider.provision(request());
  assert.deepEqual(bad.val, {
    tag: 'internal',
    val: 'setting `machines`: machine 0 needs a non-empty `id` and `agent_address`',
  });
  host.settings = {};
  assert.match((await provider.provision(request())).val.val, /setting `machines` is missing/);

  host.beforeStateCall = () => ({ tag: 'unavailable', val: 'etcd is unreachable' });
  const down = await provider.discover();
  assert.equal(down.val.tag, 'unavailable');
});

test('an exception nobody catches is internal, its stack logged at error', async () => {
  host.settings = { machines: [{ id: 'm1', agent_address: 'not a URL', node_class: 'small' }] };
  const answer = await provider.provision(request());
  assert.equal(answer.val.tag, 'internal');
  assert.match(answer.val.val, /^TypeError: /);
  assert.match(host.logged('error')[0], /^provision: uncaught TypeError: .*\n.*src\/index\.js/s);
});

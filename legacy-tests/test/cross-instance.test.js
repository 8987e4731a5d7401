// Two gateways sharing room `global` through Redis, behind HAProxy with
// cookie stickiness (long-polling needs every request of one Engine.IO
// session on the instance that holds it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, startRedis, startHaproxy, legacy, native, sleep } from '../lib/harness.js';

let redis;
let g1;
let g2;
let lb;

before(async () => {
  redis = await startRedis();
  const env = (id) => ({ REDIS_HOST: '127.0.0.1', REDIS_PORT: String(redis.port), SERVER_ID: id });
  g1 = await startGateway(env('g1'));
  g2 = await startGateway(env('g2'));
  lb = await startHaproxy([{ name: 'g1', port: g1.port }, { name: 'g2', port: g2.port }]);
});

after(async () => {
  await lb?.stop();
  for (const g of [g1, g2]) {
    if (g) assert.doesNotMatch((await g.stop()).log, /panicked/);
  }
  await redis?.stop();
});

const socketio = async () => [(await g1.health()).connections.socketio, (await g2.health()).connections.socketio];

test('behind HAProxy with infra/haproxy.cfg (cookie PANTHEON_SERVER): polling then upgrade, one client per instance, legacy and native across instances', { timeout: 60_000 }, async () => {
  const r = await fetch(`${lb.url}/socket.io/?EIO=4&transport=polling`);
  assert.match(r.headers.get('set-cookie') ?? '', /^PANTHEON_SERVER=gw[12]/, 'HAProxy inserts its cookie');
  await r.text();
  // Default transports (long-polling first, then the upgrade); the cookie jar
  // of a browser is socket.io-client's `withCredentials` in Node.
  const a = await legacy(lb.url, { deviceId: 'x-a', withCredentials: true });
  const b = await legacy(lb.url, { deviceId: 'x-b', withCredentials: true });
  const nat = await native(`ws://127.0.0.1:${g2.port}/ws`, 'native-g2');
  try {
    for (const c of [a, b]) {
      assert.equal(c.firstTransport(), 'polling');
      const deadline = Date.now() + 5000;
      while (c.transport() !== 'websocket' && Date.now() < deadline) await sleep(20);
      assert.equal(c.transport(), 'websocket');
    }
    // leastconn for clients without a cookie: one on each instance.
    assert.deepEqual((await socketio()).sort(), [1, 1]);
    a.emit('join-account');
    await a.next('existing-peers');
    b.emit('join-account');
    assert.ok((await b.next('existing-peers')).some((p) => p.userId === 'x-a'));
    await a.next('peer-joined', (p) => p.userId === 'x-b');
    await nat.request({ type: 'join', room: 'global' }, 'joined');
    await a.next('peer-joined', (p) => p.userId === nat.peer);

    a.emit('webrtc-signal', { to: 'x-b', data: { sdp: 'across' } });
    assert.deepEqual(await b.next('webrtc-signal'), { fromUserId: 'x-a', signal: { sdp: 'across' } });
    b.emit('webrtc-signal', { targetUserId: 'x-a', signal: { sdp: 'back' } });
    assert.deepEqual(await a.next('webrtc-signal'), { fromUserId: 'x-b', signal: { sdp: 'back' } });
    a.emit('webrtc-signal', { to: nat.peer, data: 1 });
    b.emit('webrtc-signal', { to: nat.peer, data: 2 });
    const got = [await nat.next('signal'), await nat.next('signal')].map((s) => [s.from, s.data]).sort();
    assert.deepEqual(got, [['x-a', 1], ['x-b', 2]]);
    nat.send({ type: 'signal', room: 'global', to: 'x-a', data: 'n1' });
    nat.send({ type: 'signal', room: 'global', to: 'x-b', data: 'n2' });
    assert.deepEqual(await a.next('webrtc-signal'), { fromUserId: nat.peer, signal: 'n1' });
    assert.deepEqual(await b.next('webrtc-signal'), { fromUserId: nat.peer, signal: 'n2' });
    a.emit('announce-models', { models: ['m'] });
    assert.deepEqual((await b.next('peer-models-updated')).models, ['m']);
    b.emit('request-models', 'x-a');
    assert.deepEqual(await a.next('models-requested'), { fromUserId: 'x-b' });
    b.close();
    assert.equal((await a.next('peer-left', (p) => p.userId === 'x-b')).userId, 'x-b');
    assert.equal((await nat.next('peer_left', (m) => m.peer === 'x-b')).reason, 'left');
  } finally {
    a.close();
    b.close();
    await nat.close();
  }
});

test('long-polling only, through HAProxy: every request of a session reaches its instance', { timeout: 60_000 }, async () => {
  const a = await legacy(lb.url, { deviceId: 'p-a', withCredentials: true, transports: ['polling'] });
  const b = await legacy(lb.url, { deviceId: 'p-b', withCredentials: true, transports: ['polling'] });
  try {
    a.emit('join-account');
    await a.next('existing-peers');
    b.emit('join-account');
    await b.next('existing-peers');
    for (let i = 0; i < 10; i++) a.emit('webrtc-signal', { to: 'p-b', data: i });
    for (let i = 0; i < 10; i++) assert.equal((await b.next('webrtc-signal')).signal, i);
    assert.equal(a.transport(), 'polling');
  } finally {
    a.close();
    b.close();
  }
});

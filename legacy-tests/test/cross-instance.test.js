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

test('a deviceId connected to one instance and then to another is replaced there; a native id is refused on every instance', { timeout: 60_000 }, async () => {
  const id = `dup-${process.pid}`;
  const near = await native(`ws://127.0.0.1:${g2.port}/ws`, 'near-g2');
  const far = await native(`ws://127.0.0.1:${g1.port}/ws`, 'far-g1');
  const first = await legacy(g1.http, { deviceId: id, transports: ['websocket'] });
  let second;
  try {
    await near.request({ type: 'join', room: 'global' }, 'joined');
    await far.request({ type: 'join', room: 'global' }, 'joined');
    first.emit('join-account');
    await first.next('existing-peers');
    await near.next('peer_joined', (m) => m.peer === id);
    await far.next('peer_joined', (m) => m.peer === id);

    second = await legacy(g2.http, { deviceId: id, clientType: 'second', transports: ['websocket'] });
    assert.equal(await first.next('disconnect'), 'io server disconnect');
    // Both instances' members see the old session leave before the new one joins.
    assert.equal((await near.next('peer_left', (m) => m.peer === id)).reason, 'left');
    assert.equal((await far.next('peer_left', (m) => m.peer === id)).reason, 'left');
    for (let i = 0; i < 50 && (await socketio()).join() !== '0,1'; i++) await sleep(50);
    assert.deepEqual(await socketio(), [0, 1], 'one session under the id, on the second instance');
    second.emit('join-account');
    await second.next('existing-peers');
    assert.equal((await near.next('peer_joined', (m) => m.peer === id)).meta.clientType, 'second');
    assert.equal((await far.next('peer_joined', (m) => m.peer === id)).meta.clientType, 'second');

    near.send({ type: 'signal', room: 'global', to: id, data: 'same instance' });
    far.send({ type: 'signal', room: 'global', to: id, data: 'across' });
    const got = [await second.next('webrtc-signal'), await second.next('webrtc-signal')];
    assert.deepEqual(got.map((s) => s.signal).sort(), ['across', 'same instance']);
    await far.none('peer_left', (m) => m.peer === id, 500);

    // A session the server named is never replaced, wherever it is served.
    await assert.rejects(legacy(g2.http, { deviceId: far.peer }), /connect_error: bad_request/);
    assert.equal((await far.request({ type: 'ping' }, 'pong')).type, 'pong');
  } finally {
    first.close();
    second?.close();
    await near.close();
    await far.close();
  }
});

test('a deviceId whose instance was killed is taken over at once, its rooms told before the grace window ends', { timeout: 60_000 }, async () => {
  const g3 = await startGateway({ REDIS_HOST: '127.0.0.1', REDIS_PORT: String(redis.port), SERVER_ID: 'g3' });
  const id = `orphan-${process.pid}`;
  const near = await native(`ws://127.0.0.1:${g2.port}/ws`, 'near-g2');
  let second;
  try {
    await near.request({ type: 'join', room: 'global' }, 'joined');
    const first = await legacy(g3.http, { deviceId: id, transports: ['websocket'] });
    first.emit('join-account');
    await first.next('existing-peers');
    await near.next('peer_joined', (m) => m.peer === id);
    g3.child.kill('SIGKILL');
    await g3.stop();
    first.close();

    const t0 = Date.now();
    second = await legacy(g2.http, { deviceId: id, transports: ['websocket'] });
    assert.equal((await near.next('peer_left', (m) => m.peer === id)).reason, 'left');
    assert.ok(Date.now() - t0 < 5000, 'not after the resume grace window');
    second.emit('join-account');
    await second.next('existing-peers');
    await near.next('peer_joined', (m) => m.peer === id);
    near.send({ type: 'signal', room: 'global', to: id, data: 'found' });
    assert.equal((await second.next('webrtc-signal')).signal, 'found');
  } finally {
    second?.close();
    await near.close();
    await g3.stop();
  }
});

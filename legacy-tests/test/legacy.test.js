// The old server's clients, unchanged, against one gateway: socket.io-client
// 4.x and 2.x (Engine.IO 3), long-polling then upgrade and websocket-only,
// every event of PROTOCOL.md §9, native WebSocket and WebTransport peers in
// room `global`, replacement by deviceId, limits, metrics, CORS.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, legacy, native, sleep } from '../lib/harness.js';

let gw;
let url;
let n = 0;
const dev = (p) => `${p}-${process.pid}-${++n}`;

before(async () => {
  gw = await startGateway({ RATE_LIMIT_PER_SEC: '20', RATE_LIMIT_BURST: '20' });
  url = gw.http;
});

after(async () => {
  const stopped = await gw.stop();
  assert.doesNotMatch(stopped.log, /panicked/);
});

async function joined(client) {
  client.emit('join-account');
  return client.next('existing-peers');
}

for (const [version, label] of [[4, 'socket.io-client 4.x'], [2, 'socket.io-client 2.x (EIO3)']]) {
  test(`${label}: polling then upgrade and websocket-only; every event both ways`, { timeout: 60_000 }, async () => {
    const a = await legacy(url, { version, deviceId: dev('a'), clientType: 'desktop' });
    const b = await legacy(url, { version, deviceId: dev('b'), clientType: 'mobile', transports: ['websocket'] });
    try {
      assert.equal(b.transport(), 'websocket');
      // Default options: HTTP long-polling first, then the upgrade.
      assert.equal(a.firstTransport(), 'polling');
      assert.equal(b.firstTransport(), 'websocket');
      const deadline = Date.now() + 5000;
      while (a.transport() !== 'websocket' && Date.now() < deadline) await sleep(20);
      assert.equal(a.transport(), 'websocket', 'the default client upgrades to WebSocket');

      const before = await joined(a);
      assert.ok(!before.some((p) => p.userId === b.deviceId));
      const list = await joined(b);
      const seenA = list.find((p) => p.userId === a.deviceId);
      assert.deepEqual(seenA, { userId: a.deviceId, socketId: a.socket.id, clientType: 'desktop', originalUserId: a.deviceId, models: [] });
      assert.deepEqual(await a.next('peer-joined', (p) => p.userId === b.deviceId),
        { userId: b.deviceId, socketId: b.socket.id, clientType: 'mobile', originalUserId: b.deviceId });

      // webrtc-signal, both field spellings.
      a.emit('webrtc-signal', { to: b.deviceId, data: { type: 'offer', sdp: 'v=0' } });
      assert.deepEqual(await b.next('webrtc-signal'), { fromUserId: a.deviceId, signal: { type: 'offer', sdp: 'v=0' } });
      b.emit('webrtc-signal', { targetUserId: a.deviceId, signal: { candidate: 'c1' } });
      assert.deepEqual(await a.next('webrtc-signal'), { fromUserId: b.deviceId, signal: { candidate: 'c1' } });

      // request-peer-list
      b.emit('request-peer-list');
      const peers = await b.next('peer-list');
      assert.ok(peers.some((p) => p.userId === a.deviceId && p.socketId === a.socket.id));
      assert.ok(!peers.some((p) => p.userId === b.deviceId), 'peer-list lists the others');

      // announce-models / peer-models-updated, then what a late joiner sees.
      a.emit('announce-models', { models: ['llama-3'], batteryState: { level: 0.5, charging: true } });
      assert.deepEqual(await b.next('peer-models-updated'),
        { userId: a.deviceId, models: ['llama-3'], batteryState: { level: 0.5, charging: true }, clientType: 'desktop' });
      b.emit('request-peer-list');
      const again = await b.next('peer-list');
      const a2 = again.find((p) => p.userId === a.deviceId);
      assert.deepEqual([a2.models, a2.batteryState], [['llama-3'], { level: 0.5, charging: true }]);

      // request-models / models-requested
      b.emit('request-models', a.deviceId);
      assert.deepEqual(await a.next('models-requested'), { fromUserId: b.deviceId });

      // The error for an unknown target.
      a.emit('webrtc-signal', { to: 'nobody-here', data: {} });
      const err = await a.next('error');
      assert.equal(err.code, 'PEER_NOT_FOUND');
      assert.deepEqual(err.details, { peerId: 'nobody-here' });
      assert.equal(typeof err.message, 'string');
      assert.ok(!Number.isNaN(Date.parse(err.timestamp)));

      // peer-left when a client goes.
      const bSid = b.socket.id;
      b.close();
      assert.deepEqual(await a.next('peer-left', (p) => p.userId === b.deviceId),
        { userId: b.deviceId, socketId: bSid, clientType: 'mobile', originalUserId: b.deviceId });
    } finally {
      a.close();
      b.close();
    }
  });
}

test('native WebSocket and WebTransport peers and legacy clients in room global, both ways', { timeout: 60_000 }, async () => {
  const l4 = await legacy(url, { version: 4, deviceId: dev('l4') });
  const l2 = await legacy(url, { version: 2, deviceId: dev('l2'), clientType: 'old' });
  const ws = await native(`ws://127.0.0.1:${gw.port}/ws`, 'ws');
  const wt = await native(`https://127.0.0.1:${gw.port}/wt`, 'wt');
  try {
    await joined(l4);
    await joined(l2);
    const wsJoin = await ws.request({ type: 'join', room: 'global', meta: { clientType: 'rust' } }, 'joined');
    const l4meta = wsJoin.peers.find((p) => p.peer === l4.deviceId);
    assert.ok(l4meta, JSON.stringify(wsJoin));
    assert.deepEqual(l4meta.meta, { clientType: 'web', socketId: l4.socket.id, models: [] });
    const wtJoin = await wt.request({ type: 'join', room: 'global' }, 'joined');
    assert.ok(wtJoin.peers.some((p) => p.peer === l2.deviceId && p.meta.clientType === 'old'));
    // Legacy clients see natives join, with their peer id as socketId.
    assert.deepEqual(await l4.next('peer-joined', (p) => p.userId === ws.peer),
      { userId: ws.peer, socketId: ws.peer, clientType: 'rust', originalUserId: ws.peer });
    assert.deepEqual(await l2.next('peer-joined', (p) => p.userId === wt.peer),
      { userId: wt.peer, socketId: wt.peer, clientType: 'native', originalUserId: wt.peer });

    // legacy -> native (WebSocket and WebTransport)
    l4.emit('webrtc-signal', { to: ws.peer, data: { sdp: 'to-ws' } });
    const s1 = await ws.next('signal');
    assert.deepEqual([s1.room, s1.from, s1.data], ['global', l4.deviceId, { sdp: 'to-ws' }]);
    l2.emit('webrtc-signal', { targetUserId: wt.peer, signal: { sdp: 'to-wt' } });
    const s2 = await wt.next('signal');
    assert.deepEqual([s2.from, s2.data], [l2.deviceId, { sdp: 'to-wt' }]);
    // native -> legacy
    ws.send({ type: 'signal', room: 'global', to: l2.deviceId, data: { sdp: 'from-ws' } });
    assert.deepEqual(await l2.next('webrtc-signal'), { fromUserId: ws.peer, signal: { sdp: 'from-ws' } });
    wt.send({ type: 'signal', room: 'global', to: l4.deviceId, data: { sdp: 'from-wt' } });
    assert.deepEqual(await l4.next('webrtc-signal'), { fromUserId: wt.peer, signal: { sdp: 'from-wt' } });
    // request-models to a native peer is a signal it can answer.
    l4.emit('request-models', wt.peer);
    assert.deepEqual((await wt.next('signal', (m) => m.from === l4.deviceId)).data, { type: 'request-models' });
    wt.send({ type: 'signal', room: 'global', to: l4.deviceId, data: { type: 'request-models' } });
    assert.deepEqual(await l4.next('models-requested'), { fromUserId: wt.peer });
    // A legacy client's announce reaches natives as peer_updated; a native's
    // update reaches legacy clients as peer-models-updated.
    l2.emit('announce-models', { models: ['m1'] });
    const up = await ws.next('peer_updated', (m) => m.peer === l2.deviceId);
    assert.deepEqual(up.meta.models, ['m1']);
    ws.send({ type: 'update', room: 'global', meta: { clientType: 'rust', models: ['r1'], batteryState: 'full' } });
    assert.deepEqual(await l4.next('peer-models-updated', (p) => p.userId === ws.peer),
      { userId: ws.peer, models: ['r1'], batteryState: 'full', clientType: 'rust' });
    // Natives see a legacy client go.
    l2.close();
    const left = await ws.next('peer_left', (m) => m.peer === l2.deviceId);
    assert.equal(left.reason, 'left');
    await ws.close();
    assert.equal((await l4.next('peer-left', (p) => p.userId === ws.peer)).clientType, 'rust');
  } finally {
    l4.close();
    l2.close();
    await ws.close();
    await wt.close();
  }
});

test('a second connection with the same deviceId replaces the first', { timeout: 60_000 }, async () => {
  const id = dev('dup');
  const watcher = await legacy(url, { deviceId: dev('watch') });
  const first = await legacy(url, { deviceId: id, transports: ['websocket'] });
  try {
    await joined(watcher);
    await joined(first);
    await watcher.next('peer-joined', (p) => p.userId === id);
    const firstSid = first.socket.id;
    const second = await legacy(url, { version: 2, deviceId: id, clientType: 'second' });
    try {
      assert.equal(await first.next('disconnect'), 'io server disconnect');
      assert.deepEqual(await watcher.next('peer-left', (p) => p.userId === id),
        { userId: id, socketId: firstSid, clientType: 'web', originalUserId: id });
      await joined(second);
      assert.equal((await watcher.next('peer-joined', (p) => p.userId === id)).clientType, 'second');
      watcher.emit('webrtc-signal', { to: id, data: 'hi' });
      assert.deepEqual(await second.next('webrtc-signal'), { fromUserId: watcher.deviceId, signal: 'hi' });
    } finally {
      second.close();
    }
  } finally {
    watcher.close();
    first.close();
  }
});

test('a native session is never replaced by a deviceId', { timeout: 60_000 }, async () => {
  const ws = await native(`ws://127.0.0.1:${gw.port}/ws`, 'ws');
  try {
    await assert.rejects(legacy(url, { deviceId: ws.peer }), /connect_error: bad_request/);
    assert.deepEqual((await ws.request({ type: 'ping' }, 'pong')).type, 'pong');
  } finally {
    await ws.close();
  }
});

test('rate limits and message size limits apply to legacy events', { timeout: 60_000 }, async () => {
  const a = await legacy(url, { deviceId: dev('flood'), transports: ['websocket'] });
  try {
    await joined(a);
    for (let i = 0; i < 60; i++) a.emit('request-peer-list');
    const err = await a.next('error', (e) => e.code === 'RATE_LIMITED');
    assert.equal(typeof err.timestamp, 'string');
    await sleep(1200);
    a.emit('request-peer-list');
    await a.next('peer-list');
  } finally {
    a.close();
  }
  // Over maxHttpBufferSize (MAX_MESSAGE_BYTES) the connection is closed, as
  // the old server's maxHttpBufferSize did.
  const big = await legacy(url, { deviceId: dev('big'), transports: ['websocket'] });
  big.emit('webrtc-signal', { to: 'x', data: 'y'.repeat(70_000) });
  assert.equal(await big.next('disconnect'), 'transport close');
});

test('legacy connections count in /health and /metrics as socketio', { timeout: 60_000 }, async () => {
  const a = await legacy(url, { deviceId: dev('count') });
  const b = await legacy(url, { version: 2, deviceId: dev('count'), transports: ['websocket'] });
  try {
    const h = await gw.health();
    assert.equal(h.connections.socketio, 2, JSON.stringify(h));
    const m = await (await fetch(`${url}/metrics`)).text();
    assert.match(m, /pantheon_connections\{[^}]*transport="socketio"\} 2/);
  } finally {
    a.close();
    b.close();
  }
  const deadline = Date.now() + 5000;
  while ((await gw.health()).connections.socketio !== 0 && Date.now() < deadline) await sleep(50);
  assert.equal((await gw.health()).connections.socketio, 0);
});

test('CORS as the old server: any origin, and long-polling answers it', { timeout: 60_000 }, async () => {
  const r = await fetch(`${url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: 'https://app.example' } });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('access-control-allow-origin'), '*');
  assert.match(await r.text(), /^0\{"sid":/);
  const pre = await fetch(`${url}/socket.io/?EIO=4&transport=polling`, {
    method: 'OPTIONS',
    headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
  });
  assert.ok(pre.status < 300);
  assert.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/);
});

// The SDK against a real gateway (target/release/pantheon, or PANTHEON_BIN)
// over WebSocket: requests and typed events, typed errors, the state model,
// and resume after a lost connection (same peer, every missed signal once and
// in order), after an expired grace window (rejoin), and takeover (4010).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect, PantheonError, backoffDelay } from '../dist/pantheon.js';
import { startGateway, wsConnect, tcpProxy, collect, until, sleep, freshRoom } from './helpers.js';

describe('backoffDelay', () => {
  it('grows exponentially up to the cap, with jitter taking at most its fraction', () => {
    const o = { initialDelayMs: 100, maxDelayMs: 1000, jitter: 0.5 };
    assert.equal(backoffDelay(0, o, () => 0), 100);
    assert.equal(backoffDelay(1, o, () => 0), 200);
    assert.equal(backoffDelay(3, o, () => 0), 800);
    assert.equal(backoffDelay(4, o, () => 0), 1000);
    assert.equal(backoffDelay(40, o, () => 0), 1000);
    assert.equal(backoffDelay(2, o, () => 0.999999), 200);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(2, o);
      assert.ok(d >= 200 && d <= 400, `delay ${d} outside [200, 400]`);
    }
  });
});

describe('SDK against one gateway (WebSocket)', { concurrency: 1, timeout: 60_000 }, () => {
  let gw;
  const clients = [];
  const track = (c) => (clients.push(c), c);

  before(async () => {
    gw = await startGateway({ RESUME_GRACE_MS: '1500' });
  });
  after(async () => {
    for (const c of clients) c.close();
    await gw?.stop();
  });

  it('requests resolve with typed replies and the other side gets typed events', { timeout: 15_000 }, async () => {
    const room = freshRoom('events');
    const a = track(await wsConnect(gw.http));
    const b = track(await wsConnect(gw.http));
    assert.equal(a.state, 'open');
    assert.equal(a.transport, 'websocket', 'Node 20 has no WebTransport: auto picks WebSocket');
    assert.match(a.peer, /^p_/);
    assert.deepEqual(await a.join(room, { name: 'a' }), []);
    const pj = a.once('peer_joined');
    const others = await b.join(room, { name: 'b' });
    assert.deepEqual(others, [{ peer: a.peer, meta: { name: 'a' } }]);
    assert.deepEqual(await pj, { room, peer: b.peer, meta: { name: 'b' } });

    const sig = b.once('signal');
    await a.signal(room, b.peer, { sdp: 'x', n: [1, null] });
    assert.deepEqual(await sig, { room, from: a.peer, data: { sdp: 'x', n: [1, null] } });

    const bc = a.once('broadcast');
    await b.broadcast(room, 'hello all');
    assert.deepEqual(await bc, { room, from: b.peer, data: 'hello all' });

    const upd = b.once('peer_updated');
    await a.update(room, { name: 'a2' });
    assert.deepEqual(await upd, { room, peer: a.peer, meta: { name: 'a2' } });

    assert.deepEqual(await b.peers(room), [{ peer: a.peer, meta: { name: 'a2' } }]);
    const rtt = await a.ping();
    assert.ok(rtt >= 0 && rtt < 1000, `ping rtt ${rtt}`);

    const left = b.once('peer_left');
    await a.leave(room);
    assert.deepEqual(await left, { room, peer: a.peer, reason: 'left' });
    assert.deepEqual(a.joinedRooms, []);
  });

  it('errors are PantheonError carrying the protocol code', { timeout: 15_000 }, async () => {
    const a = track(await wsConnect(gw.http));
    const room = freshRoom('errors');
    await assert.rejects(a.signal(room, 'p_nobody', 1), (e) => e instanceof PantheonError && e.code === 'not_in_room' && e.request === 'signal');
    await a.join(room);
    await assert.rejects(a.signal(room, 'p_nobody', 1), (e) => e instanceof PantheonError && e.code === 'peer_not_found');
    await assert.rejects(a.signal(room, a.peer, 1), (e) => e.code === 'bad_request');
    await assert.rejects(a.join('bad room!'), (e) => e.code === 'bad_request' && e.request === 'join');
    // The session is still fine after errors.
    await a.ping();
  });

  it('state model: connecting → open → closed; requests after close reject with `closed`', { timeout: 15_000 }, async () => {
    const a = await wsConnect(gw.http);
    const states = collect(a, 'state');
    const b = track(await wsConnect(gw.http));
    const room = freshRoom('close');
    await a.join(room);
    await b.join(room);
    const left = b.once('peer_left');
    a.close();
    assert.equal(a.state, 'closed');
    assert.deepEqual(states.map((s) => s.state), ['closed']);
    assert.equal((await left).reason, 'left', 'close() is a goodbye');
    await assert.rejects(a.ping(), (e) => e.code === 'closed');
  });

  it('forcing WebTransport where there is none fails with `unsupported`; an unreachable URL with `connect_failed`', { timeout: 15_000 }, async () => {
    await assert.rejects(wsConnect(gw.http, { transport: 'webtransport' }), (e) => e.code === 'unsupported');
    await assert.rejects(wsConnect('http://127.0.0.1:1', { webSocketTimeoutMs: 1000 }), (e) => e.code === 'connect_failed');
  });

  it('WebTransport that does not open in time falls back to WebSocket', { timeout: 15_000 }, async () => {
    // A WebTransport whose handshake never completes (UDP silently dropped).
    const made = [];
    class Stuck {
      constructor(url, options) {
        made.push({ url, options });
        this.ready = new Promise(() => {});
        this.closed = new Promise(() => {});
      }
      close() {}
    }
    const t0 = Date.now();
    const a = track(await wsConnect(gw.http, { WebTransport: Stuck, webTransportTimeoutMs: 300 }));
    const took = Date.now() - t0;
    assert.equal(a.transport, 'websocket');
    assert.equal(made.length, 1);
    assert.equal(made[0].url, `https://127.0.0.1:${gw.port}/wt`);
    assert.ok(took >= 300 && took < 2000, `fallback took ${took} ms`);
    assert.deepEqual(a.attempts.map((x) => [x.transport, x.ok]), [['webtransport', false], ['websocket', true]]);
  });

  it('a lost connection resumes: same peer, every signal sent meanwhile once and in order, nothing seen by others', { timeout: 15_000 }, async () => {
    const proxy = await tcpProxy(gw.port);
    try {
      const room = freshRoom('resume');
      const a = track(await wsConnect(proxy.url, { reconnect: { initialDelayMs: 50, maxDelayMs: 200 } }));
      const b = track(await wsConnect(gw.http));
      await a.join(room);
      await b.join(room);
      const states = collect(a, 'state');
      const got = collect(a, 'signal');
      const bSawLeft = collect(b, 'peer_left');
      const peer = a.peer;
      await b.signal(room, a.peer, 0);
      await until(() => got.length === 1, 2000, 'signal 0');
      proxy.refuse = true;
      proxy.cut();
      await until(() => a.state === 'resuming', 2000, 'state resuming');
      for (let i = 1; i <= 20; i++) await b.signal(room, peer, i);
      await sleep(300);
      proxy.refuse = false;
      await until(() => a.state === 'open', 5000, 'state open again');
      await until(() => got.length >= 21, 3000, 'every signal');
      await sleep(200);
      assert.deepEqual(got.map((s) => s.data), Array.from({ length: 21 }, (_, i) => i), 'each signal once, in order');
      assert.equal(a.peer, peer, 'same peer');
      assert.deepEqual(states.map((s) => s.state), ['resuming', 'open']);
      assert.equal(states[1].resumed, true);
      assert.deepEqual(bSawLeft, [], 'a resume is invisible to the other members');
      // Requests made while resuming wait and then go out.
      proxy.refuse = true;
      proxy.cut();
      await until(() => a.state === 'resuming', 2000, 'state resuming');
      const pending = a.peers(room);
      await sleep(100);
      proxy.refuse = false;
      assert.deepEqual((await pending).map((p) => p.peer), [b.peer]);
    } finally {
      await proxy.close();
    }
  });

  it('a session that expired is replaced and its rooms rejoined', { timeout: 15_000 }, async () => {
    const proxy = await tcpProxy(gw.port);
    try {
      const room = freshRoom('rejoin');
      const a = track(await wsConnect(proxy.url, { reconnect: { initialDelayMs: 50, maxDelayMs: 100 } }));
      const b = track(await wsConnect(gw.http));
      await a.join(room, { name: 'a' });
      await b.join(room);
      const old = a.peer;
      const states = collect(a, 'state');
      const rejoined = a.once('rejoined');
      const leftSeen = b.once('peer_left');
      proxy.refuse = true;
      proxy.cut();
      // The grace window (1.5 s) ends: b sees the old peer go.
      assert.deepEqual(await leftSeen, { room, peer: old, reason: 'disconnected' });
      const joinedSeen = b.once('peer_joined');
      proxy.refuse = false;
      const r = await rejoined;
      assert.equal(r.room, room);
      assert.deepEqual(r.peers.map((p) => p.peer), [b.peer]);
      assert.notEqual(a.peer, old, 'a new peer');
      const open = states.find((s) => s.state === 'open');
      assert.equal(open.resumed, false);
      assert.deepEqual(await joinedSeen, { room, peer: a.peer, meta: { name: 'a' } }, 'rejoined with the same meta');
      const after = a.once('signal');
      await b.signal(room, a.peer, 'after');
      assert.equal((await after).data, 'after');
    } finally {
      await proxy.close();
    }
  });

  it('a session resumed by another connection is closed as taken over (4010), without reconnecting', { timeout: 15_000 }, async () => {
    const a = await wsConnect(gw.http);
    const closed = a.once('state', (s) => s.state === 'closed');
    const ws = new WebSocket(gw.ws, 'pantheon.v1');
    await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
    const welcome = new Promise((ok) => { ws.onmessage = (ev) => ok(JSON.parse(ev.data)); });
    ws.send(JSON.stringify({ type: 'hello', v: 1, resume: { session: a.session, last_seq: a.lastSeq } }));
    assert.equal((await welcome).resumed, true);
    const s = await closed;
    assert.equal(s.error.code, 'taken_over');
    assert.equal(s.error.closeCode, 4010);
    await sleep(300);
    assert.equal(a.state, 'closed', 'no reconnect after a takeover');
    ws.close(1000);
  });
});

describe('connect() without a WebSocket implementation', () => {
  it('says what to pass', { timeout: 15_000 }, async () => {
    await assert.rejects(connect('http://127.0.0.1:1', { WebTransport: null }), (e) => e.code === 'unsupported' && /ws/.test(e.message));
  });
});

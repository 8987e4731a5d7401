// Processes and clients for the legacy Socket.IO tests: the release gateway
// (started by e2e/lib/gateway.js), redis-server, haproxy, native peers (the
// Rust client's line_peer example over WebSocket or WebTransport) and the
// real socket.io-client packages, 4.x and 2.x (Engine.IO 3).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { io as io4 } from 'socket.io-client';
import io2 from 'socket.io-client-v2';
import { freePort } from '../../e2e/lib/gateway.js';

export { startGateway, freePort } from '../../e2e/lib/gateway.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR || join(root, 'target');
export const LINE_PEER_BIN = process.env.LINE_PEER_BIN || join(targetDir, 'release', 'examples', 'line_peer');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Children still running when this process ends are killed.
const live = new Set();
process.on('exit', () => { for (const c of live) { try { c.kill('SIGKILL'); } catch { /* gone */ } } });

function track(child) {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** A queue of received items with waiting by predicate. */
class Inbox {
  constructor(name) { this.name = name; this.items = []; this.waiters = []; }
  push(item) {
    this.items.push(item);
    for (const w of [...this.waiters]) {
      const i = this.items.findIndex(w.pred);
      if (i >= 0) {
        const [hit] = this.items.splice(i, 1);
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.ok(hit);
      }
    }
  }
  /** The first item (already received or coming) that matches `pred`. */
  take(pred, what, ms = 5000) {
    const i = this.items.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.items.splice(i, 1)[0]);
    return new Promise((ok, fail) => {
      const w = { pred, ok };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        fail(new Error(`${this.name}: no ${what} within ${ms} ms; got ${JSON.stringify(this.items).slice(0, 2000)}`));
      }, ms);
      this.waiters.push(w);
    });
  }
  /** Nothing matching `pred` arrives within `ms`. */
  async none(pred, what, ms = 300) {
    await sleep(ms);
    const hit = this.items.find(pred);
    if (hit) throw new Error(`${this.name}: unexpected ${what}: ${JSON.stringify(hit)}`);
  }
}

const LEGACY_EVENTS = ['existing-peers', 'peer-joined', 'peer-left', 'webrtc-signal', 'peer-list',
  'peer-models-updated', 'models-requested', 'error'];

/**
 * A legacy client: `version` 4 (socket.io-client 4.x, `auth`) or 2
 * (socket.io-client 2.x over Engine.IO 3, which can only send `query`).
 * Resolves once connected; rejects with the connect_error.
 */
export async function legacy(url, { version = 4, deviceId, authKey, clientType = 'web', transports, withCredentials, extraHeaders, name } = {}) {
  const who = name || deviceId || 'legacy';
  const inbox = new Inbox(who);
  const handshake = { deviceId, clientType, ...(authKey !== undefined ? { authKey } : {}) };
  const opts = { reconnection: false, forceNew: true, timeout: 5000 };
  if (transports) opts.transports = transports;
  if (extraHeaders) opts.extraHeaders = extraHeaders;
  let socket;
  if (version === 4) {
    if (withCredentials) opts.withCredentials = true;
    socket = io4(url, { ...opts, auth: handshake });
  } else {
    socket = io2(url, { ...opts, query: handshake });
  }
  // The transport the Engine.IO session opened with (before any upgrade).
  let first = null;
  socket.io.on('open', () => { first = first ?? socket.io.engine.transport.name; });
  for (const ev of LEGACY_EVENTS) socket.on(ev, (data) => inbox.push({ event: ev, data }));
  socket.on('disconnect', (reason) => inbox.push({ event: 'disconnect', data: reason }));
  await new Promise((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`${who}: no connect within 5 s`)), 5000);
    socket.once('connect', () => { clearTimeout(t); ok(); });
    socket.once('connect_error', (e) => { clearTimeout(t); fail(Object.assign(new Error(`${who}: connect_error: ${e?.message ?? e}`), { cause: e })); });
    // socket.io-client 2.x reports a refusal by the server as `error`.
    if (version === 2) socket.once('error', (e) => { clearTimeout(t); fail(new Error(`${who}: connect error: ${e?.message ?? e}`)); });
  });
  return {
    socket,
    inbox,
    deviceId,
    emit: (ev, ...args) => socket.emit(ev, ...args),
    next: (event, pred = () => true, ms) => inbox.take((m) => m.event === event && pred(m.data), event, ms).then((m) => m.data),
    none: (event, pred = () => true, ms) => inbox.none((m) => m.event === event && pred(m.data), event, ms),
    transport: () => socket.io.engine.transport.name,
    firstTransport: () => first,
    close: () => socket.close(),
  };
}

/** A native peer (WebSocket `ws://.../ws` or WebTransport `https://.../wt`). */
export async function native(url, name = 'native') {
  if (!existsSync(LINE_PEER_BIN)) {
    throw new Error(`${LINE_PEER_BIN} not found: cargo build --release -p pantheon-client --example line_peer`);
  }
  const child = track(spawn(LINE_PEER_BIN, [url], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const inbox = new Inbox(name);
  createInterface({ input: child.stdout }).on('line', (l) => { try { inbox.push(JSON.parse(l)); } catch { /* not JSON */ } });
  const welcome = await inbox.take((m) => m.type === 'welcome', 'welcome', 10_000);
  let nextId = 1;
  const peer = {
    peer: welcome.peer,
    inbox,
    send: (msg) => child.stdin.write(`${JSON.stringify(msg)}\n`),
    next: (type, pred = () => true, ms) => inbox.take((m) => m.type === type && pred(m), type, ms),
    none: (type, pred = () => true, ms) => inbox.none((m) => m.type === type && pred(m), type, ms),
    async request(msg, reply) {
      const id = nextId++;
      peer.send({ ...msg, id });
      return inbox.take((m) => m.id === id && (m.type === reply || m.type === 'error'), reply);
    },
    close: () => new Promise((ok) => {
      if (child.exitCode !== null || child.signalCode !== null) return ok();
      child.once('exit', ok);
      child.stdin.end();
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    }),
  };
  return peer;
}

/** redis-server on a free loopback port, without persistence. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'pantheon-legacy-redis-'));
  const child = track(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' }));
  await waitTcp(port);
  return { port, stop: async () => { child.kill('SIGKILL'); await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r))); rmSync(dir, { recursive: true, force: true }); } };
}

/**
 * HAProxy running the shipped `infra/haproxy.cfg` itself (backends from
 * `GW1_ADDR`..`GW3_ADDR`; cookie `PANTHEON_SERVER` stickiness, `/ready`
 * health checks, `leastconn` for clients without a cookie). Backends beyond
 * the ones given point at a closed port and are soon marked down.
 */
export async function startHaproxy(backends) {
  const port = await freePort();
  const stats = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'pantheon-legacy-haproxy-'));
  const cfg = fileURLToPath(new URL('../../infra/haproxy.cfg', import.meta.url));
  const closed = await freePort();
  const env = {
    ...process.env,
    LB_BIND: `127.0.0.1:${port}`,
    LB_STATS_BIND: `127.0.0.1:${stats}`,
    LB_SOCKET: join(dir, 'haproxy.sock'),
  };
  for (let i = 0; i < 3; i++) {
    env[`GW${i + 1}_ADDR`] = `127.0.0.1:${backends[i]?.port ?? closed}`;
  }
  const check = spawn('haproxy', ['-c', '-f', cfg], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  check.stdout.on('data', (d) => { out += d; });
  check.stderr.on('data', (d) => { out += d; });
  const code = await new Promise((r) => check.once('exit', r));
  if (code !== 0) throw new Error(`haproxy -c rejected infra/haproxy.cfg:\n${out}`);
  const child = track(spawn('haproxy', ['-db', '-f', cfg], { env, stdio: 'ignore' }));
  await waitTcp(port);
  // Health checks (inter 1s, fall 2) have marked the missing backends down.
  await sleep(3000);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    stop: async () => { child.kill('SIGKILL'); await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r))); rmSync(dir, { recursive: true, force: true }); },
  };
}

async function waitTcp(port) {
  const { connect } = await import('node:net');
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise((r) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} after 10 s`);
    await sleep(50);
  }
}

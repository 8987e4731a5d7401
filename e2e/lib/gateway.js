// Starts and stops the real gateway binary (target/release/pantheon) on free
// loopback ports, for the browser tests.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { existsSync, mkdtempSync, createWriteStream, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const GATEWAY_BIN = process.env.PANTHEON_BIN || join(root, 'target', 'release', 'pantheon');

// Gateways still running when this process ends, however it ends, are killed.
const live = new Set();
function killAll() {
  for (const child of live) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killAll();
    process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 })[sig]);
  });
}

function bindTcp(port) {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen({ host: '127.0.0.1', port, exclusive: true }, () => ok(s));
  });
}

function bindUdp(port) {
  return new Promise((ok, fail) => {
    const s = createSocket('udp4');
    s.once('error', fail);
    s.bind({ address: '127.0.0.1', port, exclusive: true }, () => ok(s));
  });
}

/** A port number free on 127.0.0.1 for both TCP and UDP. */
export async function freePort() {
  for (let attempt = 0; attempt < 50; attempt++) {
    const tcp = await bindTcp(0);
    const port = tcp.address().port;
    try {
      const udp = await bindUdp(port);
      await new Promise((ok) => udp.close(ok));
      await new Promise((ok) => tcp.close(ok));
      return port;
    } catch {
      await new Promise((ok) => tcp.close(ok));
    }
  }
  throw new Error('no port free for both TCP and UDP on 127.0.0.1 after 50 tries');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts the gateway with `env` added to the environment (`env.PORT` picks
 * the port, for a test that must know it beforehand; a free one otherwise).
 * Resolves once GET /health answers 200.
 */
export async function startGateway(env = {}) {
  if (!existsSync(GATEWAY_BIN)) {
    throw new Error(`gateway binary ${GATEWAY_BIN} not found: run \`cargo build --release -p pantheon-gateway\` first (or set PANTHEON_BIN)`);
  }
  const port = env.PORT ? Number(env.PORT) : await freePort();
  const logDir = mkdtempSync(join(tmpdir(), 'pantheon-e2e-'));
  const logPath = join(logDir, 'gateway.log');
  const log = createWriteStream(logPath);
  const child = spawn(GATEWAY_BIN, [], {
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: String(port),
      RUST_LOG: process.env.RUST_LOG || 'info',
      DRAIN_TIMEOUT_MS: '500',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  let exited = null;
  const exitPromise = new Promise((r) => child.once('exit', (code, signal) => {
    exited = { code, signal };
    live.delete(child);
    r(exited);
  }));

  const gw = {
    port,
    http: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/ws`,
    wt: `https://127.0.0.1:${port}/wt`,
    logPath,
    child,
    /** The gateway's log so far (stdout and stderr). */
    log() {
      try { return readFileSync(logPath, 'utf8'); } catch { return ''; }
    },
    /** GET /health as JSON. */
    async health() {
      return (await fetch(`${gw.http}/health`)).json();
    },
    /** Last lines of the log, for failure messages. */
    tail(n = 40) {
      return gw.log().trimEnd().split('\n').slice(-n).join('\n');
    },
    /**
     * Stops the gateway (SIGTERM, SIGKILL after 10 s) and returns how it
     * exited and its log.
     * The log file is removed unless E2E_KEEP_LOGS is set.
     */
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        let timer;
        const r = await Promise.race([exitPromise, new Promise((ok) => { timer = setTimeout(ok, 10_000, null); })]);
        clearTimeout(timer); // a pending timer would keep the test process alive
        if (!r) {
          child.kill('SIGKILL');
          await exitPromise;
        }
      }
      await new Promise((ok) => log.end(ok));
      const text = gw.log();
      if (!process.env.E2E_KEEP_LOGS) rmSync(logDir, { recursive: true, force: true });
      return { ...exited, log: text };
    },
  };

  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited) {
      throw new Error(`gateway exited at start-up (${JSON.stringify(exited)}); log:\n${gw.tail()}`);
    }
    try {
      const r = await fetch(`${gw.http}/health`);
      if (r.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await gw.stop();
      throw new Error(`gateway did not answer /health within 10 s; log:\n${gw.tail()}`);
    }
    await sleep(50);
  }
  return gw;
}

/**
 * The end of a suite: once every client has gone, the gateway has no
 * connection left, exits with status 0 on SIGTERM and never panicked.
 * Throws an AssertionError-like Error describing what was wrong.
 */
export async function expectCleanShutdown(gw, { settleMs = 5000 } = {}) {
  const deadline = Date.now() + settleMs;
  let conns;
  for (;;) {
    conns = (await gw.health()).connections;
    if (conns.websocket === 0 && conns.webtransport === 0) break;
    if (Date.now() > deadline) {
      await gw.stop();
      throw new Error(`connections left ${settleMs} ms after every page and browser closed: ${JSON.stringify(conns)}`);
    }
    await sleep(100);
  }
  const t0 = Date.now();
  const stopped = await gw.stop();
  const took = Date.now() - t0;
  if (/panicked/.test(stopped.log)) {
    throw new Error(`the gateway panicked:\n${stopped.log.slice(-4000)}`);
  }
  if (stopped.code !== 0) {
    throw new Error(`gateway exit after SIGTERM: ${JSON.stringify({ code: stopped.code, signal: stopped.signal })} after ${took} ms; log:\n${stopped.log.slice(-4000)}`);
  }
  return { took };
}

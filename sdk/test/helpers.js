// Test support: real gateways (e2e/lib), a TCP proxy whose connections the
// test can cut, and small waiting helpers.
import { createServer, createConnection } from 'node:net';
import WebSocket from 'ws';
import { connect } from '../dist/pantheon.js';

export { startGateway, freePort } from '../../e2e/lib/gateway.js';
export { startRedis } from '../../e2e/lib/redis.js';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** connect() over WebSocket (Node 20 has no global WebSocket: the `ws` package). */
export function wsConnect(url, options = {}) {
  return connect(url, { WebSocket, requestTimeoutMs: 5000, ...options });
}

/** Waits until `pred()` is true, polling. */
export async function until(pred, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Collects the events of `type` that a client emits. */
export function collect(client, type) {
  const list = [];
  client.on(type, (ev) => list.push(ev));
  return list;
}

/**
 * A TCP proxy on 127.0.0.1 to `targetPort`. `cut()` destroys every
 * connection (the client sees an abnormal close); `refuse` set to true makes
 * it drop new connections at once.
 */
export async function tcpProxy(targetPort) {
  const sockets = new Set();
  const proxy = {
    refuse: false,
    connections: 0,
    cut() {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
  };
  const server = createServer((client) => {
    if (proxy.refuse) {
      client.destroy();
      return;
    }
    proxy.connections++;
    const upstream = createConnection({ host: '127.0.0.1', port: targetPort });
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  proxy.port = server.address().port;
  proxy.url = `http://127.0.0.1:${proxy.port}`;
  proxy.close = () =>
    new Promise((ok) => {
      proxy.cut();
      server.close(ok);
    });
  return proxy;
}

let rooms = 0;
export function freshRoom(label) {
  return `sdk.${label}.${process.pid}.${++rooms}`;
}

/**
 * A TCP proxy on 127.0.0.1 to `targetPort` that holds every chunk for `ms`
 * in each direction (order kept): a link to somewhere far away. `close()`
 * destroys its connections and stops listening.
 */
export async function delayProxy(targetPort, ms) {
  const sockets = new Set();
  const relay = (from, to) => {
    from.on('data', (d) => setTimeout(() => { if (to.writable) to.write(d); }, ms));
    from.on('end', () => setTimeout(() => to.end(), ms));
  };
  const server = createServer((client) => {
    const upstream = createConnection({ host: '127.0.0.1', port: targetPort });
    sockets.add(client).add(upstream);
    relay(client, upstream);
    relay(upstream, client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', () => setTimeout(end, ms));
    upstream.on('error', end).on('close', () => setTimeout(end, ms));
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const port = server.address().port;
  return {
    port,
    http: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/ws`,
    close: () => new Promise((ok) => {
      for (const s of sockets) s.destroy();
      server.close(ok);
    }),
  };
}

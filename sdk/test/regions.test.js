// Nearest-region selection (regions: 'auto') against the `GET /regions`
// format (docs/protocol.md): local HTTP servers stand in for regions whose
// /health answers after a set delay; a real gateway behind a delaying proxy
// is the one region that accepts the session.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createServer as createTcpServer, createConnection } from 'node:net';
import { probeRegions, median, fetchRegions } from '../dist/pantheon.js';
import { startGateway, wsConnect, freePort } from './helpers.js';

/** An HTTP server: /health after `delayMs`, /regions from `regions()`, 404 (also for /ws upgrades) otherwise. */
async function fakeRegion({ delayMs = 0, regions } = {}) {
  const hits = { health: 0, regions: 0, ws: 0 };
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/health') {
      hits.health++;
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}'), delayMs);
    } else if (path === '/regions' && regions) {
      hits.regions++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(regions()));
    } else {
      if (path === '/ws') hits.ws++;
      res.writeHead(404).end();
    }
  });
  server.on('upgrade', (req, socket) => {
    hits.ws++;
    socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const port = server.address().port;
  return {
    hits,
    port,
    http: `http://127.0.0.1:${port}`,
    entry: (region) => ({ region, ws_url: `ws://127.0.0.1:${port}/ws`, wt_url: `https://127.0.0.1:${port}/wt`, instances: 1 }),
    close: () => new Promise((ok) => { server.closeAllConnections(); server.close(ok); }),
  };
}

/** A TCP proxy to `port` that holds every chunk from the server for `ms` (a far-away region). */
async function delayProxy(port, ms) {
  const sockets = new Set();
  const server = createTcpServer((c) => {
    const u = createConnection({ host: '127.0.0.1', port });
    sockets.add(c).add(u);
    c.pipe(u);
    u.on('data', (d) => setTimeout(() => c.writable && c.write(d), ms));
    const end = () => { c.destroy(); u.destroy(); };
    c.on('close', end).on('error', end);
    u.on('close', () => setTimeout(end, ms)).on('error', end);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    port: server.address().port,
    close: () => new Promise((ok) => { for (const s of sockets) s.destroy(); server.close(ok); }),
  };
}

describe('median', () => {
  it('of odd and even counts; Infinity when nothing answered', () => {
    assert.equal(median([5, 1, 9]), 5);
    assert.equal(median([4, 1, 9, 2]), 3);
    assert.equal(median([]), Infinity);
  });
});

describe('region selection', { concurrency: 1, timeout: 60_000 }, () => {
  const closers = [];
  after(async () => {
    for (const c of closers.reverse()) await c();
  });

  it('probes /health a few times per region and orders by median RTT, unreachable last', { timeout: 15_000 }, async () => {
    const near = await fakeRegion({ delayMs: 0 });
    const mid = await fakeRegion({ delayMs: 40 });
    const far = await fakeRegion({ delayMs: 120 });
    closers.push(near.close, mid.close, far.close);
    const dead = await freePort();
    const regions = [
      far.entry('far'),
      { region: 'dead', ws_url: `ws://127.0.0.1:${dead}/ws`, instances: 1 },
      { region: 'no-url', instances: 1 },
      mid.entry('mid'),
      near.entry('near'),
    ];
    const probes = await probeRegions(regions, { probes: 3, timeoutMs: 1000 });
    assert.deepEqual(probes.map((p) => p.region), ['near', 'mid', 'far', 'dead'], 'nearest first, unreachable last, no-URL left out');
    for (const f of [near, mid, far]) assert.equal(f.hits.health, 3, 'three probes per region');
    assert.ok(probes[1].median >= 40 && probes[2].median >= 120, JSON.stringify(probes.map((p) => [p.region, p.median])));
    assert.equal(probes[3].median, Infinity);
    assert.deepEqual(probes[3].rtts, []);
    assert.equal(probes[0].endpoint.http, near.http);
    assert.equal(probes[0].endpoint.ws, `ws://127.0.0.1:${near.port}/ws`);
  });

  it("regions: 'auto' connects to the nearest region that accepts, falling back in RTT order", { timeout: 20_000 }, async () => {
    const gw = await startGateway();
    closers.push(() => gw.stop());
    // The gateway is 30 ms away; a nearer region answers /health but refuses
    // sessions; a farther one would accept but is not needed.
    const proxy = await delayProxy(gw.port, 30);
    closers.push(proxy.close);
    const near = await fakeRegion({ delayMs: 0 });
    const far = await fakeRegion({ delayMs: 150 });
    closers.push(near.close, far.close);
    const list = () => ({
      self: 'mid',
      regions: [
        far.entry('far'),
        near.entry('near'),
        { region: 'mid', ws_url: `ws://127.0.0.1:${proxy.port}/ws`, instances: 1 },
      ],
    });
    const directory = await fakeRegion({ regions: list });
    closers.push(directory.close);
    assert.equal((await fetchRegions(directory.http)).self, 'mid');

    const c = await wsConnect(directory.http, { regions: 'auto', probe: { probes: 3 } });
    closers.push(async () => c.close());
    assert.deepEqual(c.regionProbes.map((p) => p.region), ['near', 'mid', 'far']);
    assert.equal(c.endpoint.region, 'mid', 'connected to the nearest region that accepted');
    assert.equal(c.transport, 'websocket');
    assert.deepEqual(
      c.attempts.map((a) => [a.endpoint, a.ok]),
      [[`ws://127.0.0.1:${near.port}/ws`, false], [`ws://127.0.0.1:${proxy.port}/ws`, true]],
      'tried the nearest first, then the next by RTT; never the farthest',
    );
    assert.equal(far.hits.ws, 0);
    await c.join('regions.test');
    // The order is kept for reconnects: nearest first, the URL given last.
    assert.deepEqual(c.endpoints.map((e) => e.region ?? 'given'), ['near', 'mid', 'far', 'given']);
  });

  it('a gateway whose /regions names no public URL (standalone) is used as given', { timeout: 15_000 }, async () => {
    const gw = await startGateway();
    closers.push(() => gw.stop());
    const c = await wsConnect(gw.http, { regions: 'auto' });
    closers.push(async () => c.close());
    // Nothing to choose from: no region was probed.
    assert.ok(c.regionProbes === undefined || c.regionProbes.length === 0, `probes: ${JSON.stringify(c.regionProbes)}`);
    assert.equal(c.endpoint.http, gw.http);
  });
});

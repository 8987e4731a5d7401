// Two regions on loopback sharing one Redis: "near" reaches Redis directly;
// "far" reaches it through a delaying proxy (30 ms each way) and is reached
// by clients only through another (40 ms each way). A client given only the
// far region's URL, with `regions: 'auto'`, ends up on the near instance, and
// signals between it and a peer in the far region arrive, in order.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fetchRegions } from '../dist/pantheon.js';
import { startGateway, startRedis, freePort, delayProxy, wsConnect, collect, until, freshRoom } from './helpers.js';

const REDIS_DELAY_MS = 30;
const CLIENT_DELAY_MS = 40;
const SIGNALS = 8;

/** `pantheon_cross_region_messages_total` of a gateway. */
async function crossRegion(gw) {
  const text = await (await fetch(`${gw.http}/metrics`)).text();
  const m = /^pantheon_cross_region_messages_total(?:\{[^}]*\})? (\d+)/m.exec(text);
  assert.ok(m, 'pantheon_cross_region_messages_total in /metrics');
  return Number(m[1]);
}

describe('cross-region (Redis)', { concurrency: 1, timeout: 90_000 }, () => {
  let redis, redisLink, near, far, farLink;
  const clients = [];

  before(async () => {
    redis = await startRedis();
    redisLink = await delayProxy(redis.port, REDIS_DELAY_MS);
    const common = { INSTANCE_TTL_MS: '2000', RESUME_GRACE_MS: '5000', REDIS_HOST: '127.0.0.1' };
    // Each region announces the URL its clients use: near its own port, far
    // the client-side proxy (made before far starts, so it knows the port).
    const nearPort = await freePort();
    near = await startGateway({
      ...common,
      PORT: String(nearPort),
      SERVER_ID: 'near-1',
      SERVER_REGION: 'near',
      REDIS_PORT: String(redis.port),
      PUBLIC_WS_URL: `ws://127.0.0.1:${nearPort}/ws`,
    });
    const farPort = await freePort();
    farLink = await delayProxy(farPort, CLIENT_DELAY_MS);
    far = await startGateway({
      ...common,
      PORT: String(farPort),
      SERVER_ID: 'far-1',
      SERVER_REGION: 'far',
      REDIS_PORT: String(redisLink.port),
      PUBLIC_WS_URL: farLink.ws,
    });
    // Both instances list both regions (the directory is read back every heartbeat).
    for (const gw of [near, far]) {
      await until(async () => {
        const list = await fetchRegions(gw.http).catch(() => null);
        return list?.regions.map((r) => r.region).join() === 'far,near';
      }, 10_000, `both regions in ${gw.http}/regions`);
    }
  });
  after(async () => {
    for (const c of clients) c.close();
    await Promise.allSettled([near, far].filter(Boolean).map((g) => g.stop()));
    await farLink?.close();
    await redisLink?.close();
    await redis?.stop();
  });

  it('/regions (through the far link) lists both regions with the URLs they announce', async () => {
    const list = await fetchRegions(farLink.http);
    assert.equal(list.self, 'far');
    assert.deepEqual(
      list.regions.map((r) => [r.region, r.ws_url, r.instances]),
      [['far', farLink.ws, 1], ['near', near.ws, 1]],
    );
  });

  it("given only the far URL, regions: 'auto' connects to near; signals to and from a peer in far arrive in order", { timeout: 30_000 }, async (t) => {
    const room = freshRoom('xregion');
    const p = await wsConnect(far.http, { transport: 'websocket' });
    clients.push(p);
    assert.equal(p.server, 'far-1');
    assert.equal(p.welcome.region, 'far');
    await p.join(room);
    const pJoined = collect(p, 'peer_joined');
    const pGot = collect(p, 'signal');

    const t0 = performance.now();
    const c = await wsConnect(farLink.http, { transport: 'websocket', regions: 'auto', probe: { probes: 3 } });
    const connectMs = performance.now() - t0;
    clients.push(c);
    const rtts = JSON.stringify(c.regionProbes.map((x) => [x.region, x.median.toFixed(1)]));
    assert.deepEqual(c.regionProbes.map((x) => x.region), ['near', 'far'], `nearest first: ${rtts}`);
    assert.ok(c.regionProbes[1].median >= 2 * CLIENT_DELAY_MS, `far's probe crosses the link: ${rtts}`);
    assert.equal(c.endpoint.region, 'near');
    assert.equal(c.endpoint.ws, near.ws);
    assert.equal(c.transport, 'websocket');
    assert.equal(c.server, 'near-1', 'welcome.server');
    assert.equal(c.welcome.region, 'near', 'welcome.region');
    assert.deepEqual(c.attempts.map((a) => [a.endpoint, a.ok]), [[near.ws, true]], 'near tried first, and accepted');
    assert.equal((await near.health()).connections.websocket, 1, 'C on near');
    assert.equal((await far.health()).connections.websocket, 1, 'only P on far');

    const cGot = collect(c, 'signal');
    const peers = await c.join(room);
    assert.deepEqual(peers.map((x) => x.peer), [p.peer], 'C sees P (in the far region) in the room');
    await until(() => pJoined.some((e) => e.peer === c.peer), 5000, 'peer_joined of C at P');

    const counted0 = [await crossRegion(near), await crossRegion(far)];
    for (let i = 0; i < SIGNALS; i++) {
      await c.signal(room, p.peer, { from: 'near', i });
      await p.signal(room, c.peer, { from: 'far', i });
    }
    await until(() => pGot.length >= SIGNALS && cGot.length >= SIGNALS, 5000,
      `every signal (P got ${pGot.length}, C got ${cGot.length} of ${SIGNALS})`);
    const expect = (from) => Array.from({ length: SIGNALS }, (_, i) => ({ from, i }));
    assert.deepEqual(pGot.map((e) => e.data), expect('near'), 'near → far: all, once, in order');
    assert.deepEqual(cGot.map((e) => e.data), expect('far'), 'far → near: all, once, in order');
    assert.ok(pGot.every((e) => e.from === c.peer && e.room === room));
    assert.ok(cGot.every((e) => e.from === p.peer && e.room === room));
    const counted = [(await crossRegion(near)) - counted0[0], (await crossRegion(far)) - counted0[1]];
    assert.ok(counted[0] >= SIGNALS && counted[1] >= SIGNALS, `cross-region messages counted by near, far: ${counted}`);
    t.diagnostic(`probe medians ${rtts} ms; connect (with probes) ${connectMs.toFixed(0)} ms; cross-region counted ${counted}`);
  });
});

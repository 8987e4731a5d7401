// Two gateways and a redis-server: the SDK moves its session to the other
// instance when its own drains (`reconnect`) or dies (SIGKILL), resuming it
// with no signal lost or repeated.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, startRedis, wsConnect, collect, until, sleep, freshRoom } from './helpers.js';

describe('SDK across instances (Redis)', { concurrency: 1, timeout: 90_000 }, () => {
  let redis;
  const gateways = [];
  const clients = [];

  async function gateway(id) {
    const gw = await startGateway({
      REDIS_URL: redis.url,
      SERVER_ID: id,
      INSTANCE_TTL_MS: '2000',
      RESUME_GRACE_MS: '10000',
      DRAIN_TIMEOUT_MS: '3000',
    });
    gateways.push(gw);
    return gw;
  }

  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const c of clients) c.close();
    await Promise.allSettled(gateways.map((g) => g.stop()));
    await redis?.stop();
  });

  /** A on `home` (with `other` as its second URL) and B on `other`, in one room; B keeps signalling A. */
  async function setup(home, other, label) {
    const room = freshRoom(label);
    const a = await wsConnect([home.http, other.http], { reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    const b = await wsConnect(other.http);
    clients.push(a, b);
    await a.join(room);
    await b.join(room);
    const got = collect(a, 'signal');
    const states = collect(a, 'state');
    let sent = 0;
    let stop = false;
    let sender;
    const start = () => {
      stop = false;
      sender = (async () => {
        while (!stop) {
          await b.signal(room, a.peer, sent);
          sent++;
          await sleep(10);
        }
      })();
    };
    start();
    await until(() => got.length >= 5, 3000, 'the first signals');
    return {
      a, b, room, got, states,
      /** Stops sending until every signal so far has arrived; then `start()` again. */
      async pause() {
        stop = true;
        await sender;
        await until(() => got.length >= sent, 3000, 'the signals so far');
      },
      start,
      async finish() {
        stop = true;
        await sender;
        await until(() => got.length >= sent, 5000, `all ${sent} signals (got ${got.length})`);
        await sleep(200);
        return sent;
      },
    };
  }

  it('drain: `reconnect` moves the session to the other instance, nothing lost or repeated', { timeout: 30_000 }, async () => {
    const gw1 = await gateway('gw-drain-1');
    const gw2 = await gateway('gw-drain-2');
    const s = await setup(gw1, gw2, 'drain');
    assert.equal(s.a.server, 'gw-drain-1');
    const peer = s.a.peer;
    const notice = s.a.once('reconnect');
    gw1.child.kill('SIGTERM');
    assert.equal((await notice).reason, 'draining');
    await until(() => s.a.state === 'open' && s.a.server === 'gw-drain-2', 10_000, 'the session on gw-drain-2');
    await sleep(300);
    const sent = await s.finish();
    assert.deepEqual(s.got.map((x) => x.data), Array.from({ length: sent }, (_, i) => i), 'every signal once, in order');
    assert.equal(s.a.peer, peer);
    const open = s.states.filter((x) => x.state === 'open');
    assert.deepEqual(open.map((x) => [x.resumed, x.server]), [[true, 'gw-drain-2']]);
    s.a.close();
    s.b.close();
  });

  it('SIGKILL: the session resumes on the other instance, nothing lost or repeated', { timeout: 30_000 }, async () => {
    const gw1 = await gateway('gw-kill-1');
    const gw2 = await gateway('gw-kill-2');
    const s = await setup(gw1, gw2, 'kill');
    const peer = s.a.peer;
    // Killed between signals: a signal acknowledged at the very instant its
    // target's instance dies can be lost with it (a gateway matter); what
    // the SDK must do is resume and get everything sent from then on.
    await s.pause();
    gw1.child.kill('SIGKILL');
    await sleep(100);
    s.start();
    await until(() => s.a.state === 'open' && s.a.server === 'gw-kill-2', 10_000, 'the session on gw-kill-2');
    await sleep(300);
    const sent = await s.finish();
    assert.deepEqual(s.got.map((x) => x.data), Array.from({ length: sent }, (_, i) => i), 'every signal once, in order');
    assert.equal(s.a.peer, peer);
    assert.deepEqual(s.states.map((x) => x.state), ['resuming', 'open']);
    assert.equal(s.states[1].resumed, true);
    s.a.close();
    s.b.close();
  });
});

// Two real browser pages, each with its own Pantheon session (WebSocket or
// WebTransport), set up a real RTCPeerConnection using nothing but offers,
// answers and ICE candidates relayed by the gateway's `signal`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway } from '../lib/gateway.js';
import { launchBrowser, servePage, openPage } from '../lib/browser.js';
import { open, join, waitMsg, state, freshRoom } from '../lib/client.js';

const NAMES = { ws: 'WebSocket', wt: 'WebTransport' };

describe('WebRTC through gateway signaling', { concurrency: Number(process.env.E2E_CONCURRENCY || 2) }, () => {
  let gw, browser, site;
  const pages = new Set();

  before(async () => {
    gw = await startGateway();
    [browser, site] = await Promise.all([launchBrowser(), servePage()]);
  }, { timeout: 30_000 });

  after(async () => {
    await Promise.allSettled([...pages].map((p) => p.close()));
    await Promise.allSettled([browser?.close(), site?.close()]);
    await gw?.stop();
  }, { timeout: 30_000 });

  async function twoPages(t, kindA, kindB, label) {
    const A = await openPage(browser, site, `A(${kindA})`);
    const B = await openPage(browser, site, `B(${kindB})`);
    for (const p of [A, B]) pages.add(p);
    t.after(() => Promise.allSettled([A, B].map((p) => { pages.delete(p); return p.close(); })));
    const room = freshRoom(label);
    const a = await open(A, gw, kindA);
    const b = await open(B, gw, kindB);
    assert.deepEqual((await join(A, room)).peers, [], 'A is alone in the fresh room');
    const joinedB = await join(B, room);
    assert.deepEqual(joinedB.peers.map((x) => x.peer), [a.peer], 'B sees A in the room');
    await waitMsg(A, { type: 'peer_joined', room, peer: b.peer }, 5000);
    return { A, B, a, b, room };
  }

  async function rtc(t, { A, B, a, b, room }, { video = false } = {}) {
    // B listens before A offers.
    await B.page.evaluate(({ room, remote }) => {
      pantheon.peers.main = new pantheon.RtcPeer(pantheon.conns.main, room, remote, { polite: true });
    }, { room, remote: a.peer });
    await A.page.evaluate(async ({ room, remote, video }) => {
      pantheon.peers.main = new pantheon.RtcPeer(pantheon.conns.main, room, remote, { polite: false });
      await pantheon.peers.main.call({ video });
    }, { room, remote: b.peer, video });

    const connected = (p) => p.page.evaluate(() => pantheon.peers.main.connected(10_000));
    const [sa, sb] = await Promise.all([connected(A), connected(B)]);
    for (const [name, s] of [['A', sa], ['B', sb]]) {
      assert.equal(s.state, 'connected');
      assert.equal(s.signaling.sent.sdp, 1, `${name} sent one SDP through the gateway`);
      assert.equal(s.signaling.received.sdp, 1, `${name} received one SDP through the gateway`);
    }
    // Each side's loopback candidates reach the other through the gateway
    // (only loopback ones are sent: both pages are on this machine).
    for (const p of [A, B]) {
      const cands = await p.page.evaluate(() => pantheon.peers.main.candidates(5000));
      for (const c of cands) assert.match(c, / (127\.0\.0\.1|::1) \d+ typ host/, `${p.name} got a loopback candidate`);
    }
    const pair = await A.page.evaluate(() => pantheon.peers.main.pair());
    t.diagnostic(`selected candidate pair seen from A: ${JSON.stringify(pair)}`);

    // A message each way over the data channel.
    await A.page.evaluate(async () => {
      await pantheon.peers.main.channelOpen(5000);
      pantheon.peers.main.dc.send('hello from A');
    });
    assert.equal(await B.page.evaluate(() => pantheon.peers.main.message(5000)), 'hello from A');
    await B.page.evaluate(async () => {
      await pantheon.peers.main.channelOpen(5000);
      pantheon.peers.main.dc.send('hello from B');
    });
    assert.equal(await A.page.evaluate(() => pantheon.peers.main.message(5000)), 'hello from B');

    let frames = null;
    if (video) frames = await B.page.evaluate(() => pantheon.peers.main.videoFrames(10_000));

    for (const p of [A, B]) {
      assert.deepEqual((await state(p)).seqProblems, [], `${p.name}: seq without gaps or repeats`);
      assert.deepEqual(p.problems, [], `${p.name}: no page errors`);
    }
    await Promise.all([A, B].map((p) => p.page.evaluate(() => pantheon.peers.main.close())));
    return frames;
  }

  for (const [ka, kb] of [['ws', 'ws'], ['wt', 'ws'], ['wt', 'wt']]) {
    it(`${NAMES[ka]} page <-> ${NAMES[kb]} page: data channel connects and carries messages`, { timeout: 40_000 }, async (t) => {
      const pair = await twoPages(t, ka, kb, `${ka}-${kb}`);
      if (ka === 'wt' || kb === 'wt') {
        const health = await (await fetch(`${gw.http}/health`)).json();
        assert.ok(health.connections.webtransport >= 1, `/health counts WebTransport sessions: ${JSON.stringify(health.connections)}`);
      }
      await rtc(t, pair);
    });
  }

  it('WebTransport page -> WebSocket page: a fake-camera video track is decoded on the other side', { timeout: 40_000 }, async (t) => {
    const pair = await twoPages(t, 'wt', 'ws', 'video');
    const frames = await rtc(t, pair, { video: true });
    assert.ok(frames.framesDecoded > 0, `frames decoded: ${JSON.stringify(frames)}`);
    assert.equal(frames.tracks, 1, 'one remote track');
  });
});

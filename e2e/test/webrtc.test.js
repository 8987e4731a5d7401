// Two real browser pages, each with its own Pantheon session (WebSocket or
// WebTransport), set up a real RTCPeerConnection using nothing but offers,
// answers and ICE candidates relayed by the gateway's `signal`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, expectCleanShutdown } from '../lib/gateway.js';
import { launchBrowser, servePage, openPage } from '../lib/browser.js';
import { open, join, waitMsg, state, freshRoom } from '../lib/client.js';

const NAMES = { ws: 'WebSocket', wt: 'WebTransport' };

describe('WebRTC through gateway signaling', { concurrency: 1 }, () => {
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

  // Two pages shared by the tests; each test has a session (and a peer
  // connection) of its own in each (pages are the expensive part of a test).
  let P, Q;
  let slots = 0;

  /** A and B: new sessions (kindA in page P, kindB in page Q) in one fresh room. */
  async function twoPages(t, kindA, kindB, label) {
    P ??= await openPage(browser, site, 'P');
    Q ??= await openPage(browser, site, 'Q');
    pages.add(P);
    pages.add(Q);
    const n = ++slots;
    const A = { ...P, key: `k${n}`, name: `A(${kindA})#${n}` };
    const B = { ...Q, key: `k${n}`, name: `B(${kindB})#${n}` };
    t.after(() => Promise.allSettled([A, B].map((h) => h.page.evaluate((key) => {
      pantheon.peers[key]?.close();
      const c = pantheon.conns[key];
      if (c && !c.closed) c.close(c.kind === 'ws' ? 1000 : 0, 'test over');
    }, h.key))));
    const room = freshRoom(label);
    const a = await open(A, gw, kindA);
    const b = await open(B, gw, kindB);
    assert.deepEqual((await join(A, room)).peers, [], 'A is alone in the fresh room');
    const joinedB = await join(B, room);
    assert.deepEqual(joinedB.peers.map((x) => x.peer), [a.peer], 'B sees A in the room');
    await waitMsg(A, { type: 'peer_joined', room, peer: b.peer }, 5000);
    return { A, B, a, b, room };
  }

  /** Runs `fn(peer, arg)` in the page of handle `h`, on its RtcPeer. */
  const onPeer = (h, fn, arg) => h.page.evaluate(
    ({ key, src, arg }) => (0, eval)(src)(pantheon.peers[key], arg),
    { key: h.key, src: fn.toString(), arg },
  );

  async function rtc(t, { A, B, a, b, room }, { video = false } = {}) {
    // B listens before A offers.
    await B.page.evaluate(({ key, room, remote }) => {
      pantheon.peers[key] = new pantheon.RtcPeer(pantheon.conns[key], room, remote, { polite: true });
    }, { key: B.key, room, remote: a.peer });
    await A.page.evaluate(async ({ key, room, remote, video }) => {
      pantheon.peers[key] = new pantheon.RtcPeer(pantheon.conns[key], room, remote, { polite: false });
      await pantheon.peers[key].call({ video });
    }, { key: A.key, room, remote: b.peer, video });

    const connected = (h) => onPeer(h, (peer) => peer.connected(10_000));
    const [sa, sb] = await Promise.all([connected(A), connected(B)]);
    for (const [name, s] of [['A', sa], ['B', sb]]) {
      assert.equal(s.state, 'connected');
      assert.equal(s.signaling.sent.sdp, 1, `${name} sent one SDP through the gateway`);
      assert.equal(s.signaling.received.sdp, 1, `${name} received one SDP through the gateway`);
    }
    // Each side's loopback candidates reach the other through the gateway
    // (only loopback ones are sent: both pages are on this machine).
    for (const h of [A, B]) {
      const cands = await onPeer(h, (peer) => peer.candidates(5000));
      for (const c of cands) assert.match(c, / (127\.0\.0\.1|::1) \d+ typ host/, `${h.name} got a loopback candidate`);
    }
    const pair = await onPeer(A, (peer) => peer.pair());
    t.diagnostic(`selected candidate pair seen from A: ${JSON.stringify(pair)}`);

    // A message each way over the data channel.
    await onPeer(A, async (peer) => {
      await peer.channelOpen(5000);
      peer.dc.send('hello from A');
    });
    assert.equal(await onPeer(B, (peer) => peer.message(5000)), 'hello from A');
    await onPeer(B, async (peer) => {
      await peer.channelOpen(5000);
      peer.dc.send('hello from B');
    });
    assert.equal(await onPeer(A, (peer) => peer.message(5000)), 'hello from B');

    let frames = null;
    if (video) frames = await onPeer(B, (peer) => peer.videoFrames(10_000));

    for (const h of [A, B]) {
      assert.deepEqual((await state(h)).seqProblems, [], `${h.name}: seq without gaps or repeats`);
    }
    return frames;
  }

  describe('cases', { concurrency: Number(process.env.E2E_CONCURRENCY || 2) }, () => {
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

  it('afterwards the gateway has no connection left, never panicked and exits cleanly on SIGTERM', { timeout: 30_000 }, async (t) => {
    for (const p of pages) assert.deepEqual(p.problems, [], `${p.name}: no page errors`);
    await Promise.allSettled([...pages].map((p) => p.close()));
    pages.clear();
    await browser.close();
    const { took } = await expectCleanShutdown(gw);
    t.diagnostic(`gateway stopped ${took} ms after SIGTERM`);
  });
});

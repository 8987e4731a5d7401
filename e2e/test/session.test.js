// Session ends as another browser page sees them (PROTOCOL.md §3, §5): a
// goodbye is `peer_left` `left` at once; any other loss is `peer_left`
// `disconnected` only when the grace window has passed; a resume within the
// window is invisible to the other members.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, expectCleanShutdown } from '../lib/gateway.js';
import { launchBrowser, launchKillableBrowser, servePage, openPage } from '../lib/browser.js';
import { open, join, signal, ping, waitMsg, received, mark, closeConn, state, freshRoom } from '../lib/client.js';

const GRACE = 2000;
// Keepalive: WebSocket pings and the QUIC keep-alive every PING_INTERVAL, a
// connection silent for PING_TIMEOUT is lost (QUIC max_idle_timeout).
// Chromium's QUIC stack times an idle connection out one second before the
// negotiated max_idle_timeout, so the keep-alive must come well within
// PING_TIMEOUT - 1 s (with 500/1500 an idle Chromium session is lost after
// 0.5 s).
const PING_INTERVAL = 500;
const PING_TIMEOUT = 3000;
// Normal close codes: WebSocket 1000, WebTransport 0. Abnormal: anything else.
const GOODBYE = { ws: 1000, wt: 0 };
const ABRUPT = { ws: 4000, wt: 1 };
const NAMES = { ws: 'WebSocket', wt: 'WebTransport' };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('session ends and resume, seen from another page', { concurrency: 1 }, () => {
  let gw, browser, site;
  // Two pages shared by the tests, one for the A side and one for the B side:
  // each test's sessions are sessions of their own in them (pages are the
  // expensive part of a test). Tests about closing a page or killing a
  // browser give A a page of its own.
  let shared;
  let sessions = 0;
  const pages = new Set();

  /** Pages closed when test `t` ends (and by the suite's `after` at the latest). */
  function track(t, ...ps) {
    for (const p of ps) pages.add(p);
    t.after(() => Promise.allSettled(ps.map((p) => { pages.delete(p); return p.close(); })));
  }

  before(async () => {
    gw = await startGateway({
      RESUME_GRACE_MS: String(GRACE),
      PING_INTERVAL_MS: String(PING_INTERVAL),
      PING_TIMEOUT_MS: String(PING_TIMEOUT),
    });
    [browser, site] = await Promise.all([launchBrowser(), servePage()]);
    shared = {
      A: await openPage(browser, site, 'A'),
      B: await openPage(browser, site, 'B'),
    };
    pages.add(shared.A);
    pages.add(shared.B);
  }, { timeout: 30_000 });

  after(async () => {
    await Promise.allSettled([...pages].map((p) => p.close()));
    await Promise.allSettled([browser?.close(), site?.close()]);
    await gw?.stop();
  }, { timeout: 30_000 });

  /**
   * A handle on a new session slot in shared page `side` ('A' or 'B'); the
   * session, if still open, ends with a goodbye when `t` ends.
   */
  function slot(t, side, kind) {
    const n = ++sessions;
    const h = { ...shared[side], key: `s${n}`, name: `${side}(${kind})#${n}` };
    t.after(() => h.page.evaluate((key) => {
      const c = pantheon.conns[key];
      if (c && !c.closed) c.close(c.kind === 'ws' ? 1000 : 0, 'test over');
    }, h.key).catch(() => {}));
    return h;
  }

  /**
   * A and B (kind) in one fresh room. A is a session in the shared A page, or
   * the only session of a page of its own (`ownPage`, or `browserA` given).
   */
  async function roomOfTwo(t, kind, label, { ownPage = false, browserA, pagehideCode } = {}) {
    let A;
    if (ownPage || browserA) {
      A = await openPage(browserA || browser, site, `A(${kind})`);
      track(t, A);
    } else {
      A = slot(t, 'A', kind);
    }
    const B = slot(t, 'B', kind);
    const room = freshRoom(label);
    const a = await open(A, gw, kind, { pagehideCode });
    const b = await open(B, gw, kind);
    await join(B, room);
    await join(A, room);
    await waitMsg(B, { type: 'peer_joined', room, peer: a.peer }, 5000);
    return { A, B, a, b, room };
  }

  /** B's `peer_left` for A, and how long after `t0` (wall clock) it arrived. */
  async function peerLeft(B, room, peer, t0, ms) {
    const m = await waitMsg(B, { type: 'peer_left', room, peer }, ms);
    return { m, elapsed: m.wall - t0 };
  }

  async function expectGoodbye(t, B, room, peer, t0) {
    const { m, elapsed } = await peerLeft(B, room, peer, t0, GRACE);
    assert.equal(m.reason, 'left', `peer_left reason: ${JSON.stringify(m)}`);
    assert.ok(elapsed < GRACE / 2, `peer_left "left" took ${elapsed} ms (grace window ${GRACE} ms)`);
    t.diagnostic(`peer_left "left" ${elapsed} ms after the close`);
  }

  async function expectDisconnectedAfterGrace(t, B, room, peer, t0, detectMs) {
    const { m, elapsed } = await peerLeft(B, room, peer, t0, GRACE + detectMs + 2000);
    assert.equal(m.reason, 'disconnected', `peer_left reason: ${JSON.stringify(m)}`);
    assert.ok(elapsed >= GRACE - 50, `peer_left came ${elapsed} ms after the loss, before the ${GRACE} ms grace window ended`);
    assert.ok(elapsed <= GRACE + detectMs + 1000, `peer_left came ${elapsed} ms after the loss (grace ${GRACE} ms, detection up to ${detectMs} ms)`);
    t.diagnostic(`peer_left "disconnected" ${elapsed} ms after the loss (grace ${GRACE} ms)`);
  }

  describe('cases', { concurrency: Number(process.env.E2E_CONCURRENCY || 4) }, () => {
    for (const kind of ['wt', 'ws']) {
      const T = NAMES[kind];

      it(`${T}: a goodbye (close code ${GOODBYE[kind]}) gives the other page peer_left "left" at once`, { timeout: 40_000 }, async (t) => {
        const { A, B, a, room } = await roomOfTwo(t, kind, `bye-${kind}`);
        const t0 = await closeConn(A, GOODBYE[kind], 'bye');
        await expectGoodbye(t, B, room, a.peer, t0);
        assert.deepEqual((await state(B)).seqProblems, []);
      });

      it(`${T}: a close with code ${ABRUPT[kind]} gives peer_left "disconnected" only after the grace window`, { timeout: 40_000 }, async (t) => {
        const { A, B, a, room } = await roomOfTwo(t, kind, `abrupt-${kind}`);
        const t0 = await closeConn(A, ABRUPT[kind], 'gone');
        await expectDisconnectedAfterGrace(t, B, room, a.peer, t0, 500);
      });

      it(`${T}: a killed browser gives peer_left "disconnected" after the keepalive timeout and the grace window`, { timeout: 45_000 }, async (t) => {
        const other = await launchKillableBrowser();
        try {
          const { B, a, room } = await roomOfTwo(t, kind, `kill-${kind}`, { browserA: other.browser });
          const t0 = Date.now();
          // No goodbye and no close of any kind: the browser's processes are gone.
          await other.kill();
          // WebSocket: the kernel resets the TCP connection at once.
          // WebTransport: UDP says nothing; the QUIC idle timeout notices.
          await expectDisconnectedAfterGrace(t, B, room, a.peer, t0, PING_TIMEOUT + 500);
        } finally {
          await other.close();
        }
      });

      it(`${T}: an idle session outlives PING_TIMEOUT_MS (keepalive)`, { timeout: 40_000 }, async (t) => {
        const A = slot(t, 'A', kind);
        await open(A, gw, kind);
        await sleep(PING_TIMEOUT + 1000);
        const s = await state(A);
        assert.equal(s.closed, null, `the idle ${T} session was lost: ${JSON.stringify(s.closed)}`);
        await ping(A);
      });
    }

    it('WebSocket: closing the page (close 1001) gives peer_left "disconnected" only after the grace window', { timeout: 40_000 }, async (t) => {
      const { A, B, a, room } = await roomOfTwo(t, 'ws', 'unload-ws', { ownPage: true });
      const t0 = Date.now();
      await A.page.close();
      await expectDisconnectedAfterGrace(t, B, room, a.peer, t0, 500);
    });

    it('WebTransport: closing a page whose client closes with 1001 on pagehide gives peer_left "disconnected" after the grace window', { timeout: 40_000 }, async (t) => {
      const { A, B, a, room } = await roomOfTwo(t, 'wt', 'unload-wt', { ownPage: true, pagehideCode: 1001 });
      const t0 = Date.now();
      await A.page.close();
      await expectDisconnectedAfterGrace(t, B, room, a.peer, t0, 500);
    });

    it('WebTransport: Chromium closes an unloading page\'s session with code 0, so a bare page close is a goodbye ("left" at once)', { timeout: 40_000 }, async (t) => {
      const { A, B, a, room } = await roomOfTwo(t, 'wt', 'unload-bare-wt', { ownPage: true });
      const t0 = Date.now();
      await A.page.close();
      await expectGoodbye(t, B, room, a.peer, t0);
    });

    for (const [from, to] of [['wt', 'wt'], ['ws', 'ws'], ['wt', 'ws'], ['ws', 'wt']]) {
      it(`resume ${NAMES[from]} -> ${NAMES[to]} within the grace window: same peer, missed signal replayed, no peer_left`, { timeout: 40_000 }, async (t) => {
        const { A, B, a, b, room } = await roomOfTwo(t, from, `resume-${from}-${to}`);
        // Something for A to have seen, so last_seq is not 0.
        await signal(B, room, a.peer, { n: 0 });
        await waitMsg(A, { type: 'signal', room, from: b.peer }, 5000);
        const before = await state(A);
        const seenByB = await mark(B);
        const t0 = await A.page.evaluate(async ({ key, code }) => {
          const at = pantheon.conns[key].close(code, 'dropped');
          await pantheon.conns[key].waitClosed(5000);
          return at;
        }, { key: A.key, code: ABRUPT[from] });
        // Sent while A is away: the gateway keeps it for A (A is a resuming member).
        await signal(B, room, a.peer, { n: 1 });
        const R = { ...A, key: `${A.key}-resumed` };
        t.after(() => R.page.evaluate((key) => pantheon.conns[key]?.close(pantheon.conns[key].kind === 'ws' ? 1000 : 0, 'test over'), R.key).catch(() => {}));
        const resumed = await open(R, gw, to, { resume: { session: a.session, last_seq: before.lastSeq } });
        const took = Date.now() - t0;
        t.diagnostic(`resumed ${took} ms after the drop`);
        assert.equal(resumed.resumed, true, `welcome.resumed (hello sent at most ${took} ms after the drop; grace window ${GRACE} ms)`);
        assert.equal(resumed.peer, a.peer, 'same peer after resume');
        const missed = await waitMsg(R, { type: 'signal', room, from: b.peer }, 5000);
        assert.deepEqual(missed.data, { n: 1 }, 'the signal sent during the drop is delivered');
        assert.equal(missed.seq, before.lastSeq + 1, 'replay continues the seq');
        // New traffic both ways after the resume.
        await signal(B, room, a.peer, { n: 2 });
        assert.deepEqual((await waitMsg(R, { type: 'signal', room, from: b.peer }, 5000)).data, { n: 2 });
        await signal(R, room, b.peer, { back: true });
        await waitMsg(B, { type: 'signal', room, from: a.peer, data: { back: true } }, 5000);
        // Past the end of the grace window: B never saw A leave or come back,
        // and both sessions are still up.
        await sleep(Math.max(0, t0 + GRACE + 700 - Date.now()));
        const since = { since: seenByB };
        assert.deepEqual(await received(B, { peer: a.peer, type: 'peer_left' }, since), [], 'no peer_left for a resumed peer');
        assert.deepEqual(await received(B, { peer: a.peer, type: 'peer_joined' }, since), [], 'no peer_joined for a resumed peer');
        await ping(R);
        await ping(B);
        assert.deepEqual((await state(R)).seqProblems, []);
        assert.deepEqual((await state(B)).seqProblems, []);
      });
    }
  });

  it('afterwards the gateway has no connection left, never panicked and exits cleanly on SIGTERM', { timeout: 30_000 }, async (t) => {
    for (const p of Object.values(shared)) assert.deepEqual(p.problems, [], `${p.name}: no page errors`);
    await Promise.allSettled([...pages].map((p) => p.close()));
    pages.clear();
    await browser.close();
    const { took } = await expectCleanShutdown(gw);
    t.diagnostic(`gateway stopped ${took} ms after SIGTERM`);
  });
});

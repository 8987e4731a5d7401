// ALLOWED_ORIGINS as a browser meets it (PROTOCOL.md §1, docs/protocol.md
// "Refused connections"): a page of an allowed origin opens WebSocket and
// WebTransport sessions; a page of another origin can open neither (403 on
// the upgrade / the CONNECT, counted as `origin` refusals), and cannot read
// the gateway's HTTP answers either (CORS).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, expectCleanShutdown } from '../lib/gateway.js';
import { launchBrowser, servePage, openPage } from '../lib/browser.js';
import { open, ping, closeConn } from '../lib/client.js';

/** `pantheon_connections_refused_total{transport, reason="origin"}` from /metrics. */
async function originRefusals(gw, transport) {
  const text = await (await fetch(`${gw.http}/metrics`)).text();
  const line = text.split('\n').find((l) =>
    l.startsWith('pantheon_connections_refused_total{') && l.includes(`transport="${transport}"`) && l.includes('reason="origin"'));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('ALLOWED_ORIGINS in a browser', { concurrency: 1 }, () => {
  let gw, browser, allowedSite, otherSite;
  const pages = [];

  before(async () => {
    [browser, allowedSite, otherSite] = await Promise.all([launchBrowser(), servePage(), servePage()]);
    gw = await startGateway({ ALLOWED_ORIGINS: new URL(allowedSite.url).origin });
  }, { timeout: 30_000 });

  after(async () => {
    await Promise.allSettled(pages.map((p) => p.close()));
    await Promise.allSettled([browser?.close(), allowedSite?.close(), otherSite?.close()]);
    if (gw) await expectCleanShutdown(gw);
  }, { timeout: 30_000 });

  it('a page of an allowed origin opens both transports', async () => {
    const p = await openPage(browser, allowedSite, 'allowed');
    pages.push(p);
    for (const kind of ['ws', 'wt']) {
      const key = `allowed-${kind}`;
      const w = await open(p, gw, kind, { key });
      assert.match(w.peer, /^p_/);
      await ping(p, { key });
      await closeConn(p, kind === 'ws' ? 1000 : 0, 'done', { key });
    }
    assert.deepEqual(p.problems, []);
  });

  it('a page of another origin opens neither', async () => {
    const p = await openPage(browser, otherSite, 'other');
    pages.push(p);
    const before = { ws: await originRefusals(gw, 'websocket'), wt: await originRefusals(gw, 'webtransport') };

    // WebSocket: the upgrade is refused (the page sees only a failed open).
    await assert.rejects(open(p, gw, 'ws', { key: 'other-ws' }), /failed to open/);

    // WebTransport: the page cannot read /webtransport/cert-hash (CORS), so
    // it is given the hash, as a page that learnt it elsewhere would be; the
    // CONNECT itself is then refused.
    await assert.rejects(open(p, gw, 'wt', { key: 'other-wt-cors' }), /Failed to fetch|fetch/i);
    const hash = await (await fetch(`${gw.http}/webtransport/cert-hash`)).json();
    const outcome = await p.page.evaluate(async ({ url, value }) => {
      const bytes = Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
      const wt = new WebTransport(url, { serverCertificateHashes: [{ algorithm: 'sha-256', value: bytes }] });
      wt.closed.catch(() => {});
      try {
        await Promise.race([wt.ready, new Promise((_, no) => setTimeout(() => no(new Error('timeout')), 5000))]);
        wt.close();
        return 'ready';
      } catch (e) {
        return `${e.name}: ${e.message}`;
      }
    }, { url: gw.wt, value: hash.value });
    assert.notEqual(outcome, 'ready', 'a WebTransport session from a disallowed origin was opened');
    assert.notEqual(outcome, 'Error: timeout');

    // Both refusals were the origin check's.
    assert.equal(await originRefusals(gw, 'websocket'), before.ws + 1);
    assert.equal(await originRefusals(gw, 'webtransport'), before.wt + 1);
    const health = await gw.health();
    assert.equal(health.connections.websocket, 0);
    assert.equal(health.connections.webtransport, 0);
  });
});

// Debian's chromium driven by playwright-core (never a downloaded browser),
// and the static test page served from this process.
import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// Flags that work on this machine (see the project's machine notes). No
// --disable-quic: WebTransport runs over QUIC. Playwright gives every launch a
// fresh, empty profile directory of its own.
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // WebRTC between two pages of this machine over loopback only: gather
  // candidates on the loopback interface, and no mDNS (multicast) host names.
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  // Fake camera for the media test, and no permission prompt.
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
];

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 20_000,
  });
}

/**
 * A browser that can be killed without a goodbye: launched as a server and
 * connected to, so that `kill()` SIGKILLs its whole process group.
 */
export async function launchKillableBrowser() {
  const server = await chromium.launchServer({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 20_000,
  });
  const browser = await chromium.connect(server.wsEndpoint(), { timeout: 10_000 });
  browser.on('disconnected', () => {});
  return {
    browser,
    pid: server.process().pid,
    kill: () => server.kill(),
    close: async () => {
      await browser.close().catch(() => {});
      await server.close().catch(() => {});
    },
  };
}

const pageDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'page');

/** Serves page/ on a free port of 127.0.0.1 (a secure context for WebTransport). */
export async function servePage() {
  const files = {
    '/': ['index.html', 'text/html; charset=utf-8'],
    '/client.js': ['client.js', 'text/javascript; charset=utf-8'],
  };
  const server = createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname];
    if (!f) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': f[1], 'cache-control': 'no-store' });
    res.end(readFileSync(join(pageDir, f[0])));
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    close: () => new Promise((ok) => { server.closeAllConnections(); server.close(ok); }),
  };
}

/**
 * A test page in its own browser context (its own profile state), with the
 * client loaded. Page errors and console errors are collected for messages.
 */
export async function openPage(browser, site, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`${name}: console: ${m.text()}`);
  });
  await page.goto(site.url);
  await page.waitForFunction(() => window.pantheon, null, { timeout: 5000 });
  return {
    name,
    page,
    context,
    problems,
    // Sessions end with a goodbye that has reached the gateway before the
    // context goes: a context closed right before the browser may never get
    // its WebTransport close out, and the gateway would see a lost client.
    close: async () => {
      if (!page.isClosed()) await page.evaluate(() => pantheon.closeAll()).catch(() => {});
      await context.close().catch(() => {});
    },
  };
}

// ALLOWED_ORIGINS narrows who may connect; the handshake's authKey/token is
// the native hello.token (PROTOCOL.md §7, §9).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, legacy } from '../lib/harness.js';

const gateways = [];
after(async () => { for (const g of gateways) await g.stop(); });

test('ALLOWED_ORIGINS: listed origins connect, others are refused', { timeout: 60_000 }, async () => {
  const gw = await startGateway({ ALLOWED_ORIGINS: 'https://good.example' });
  gateways.push(gw);
  const ok = await legacy(gw.http, { deviceId: 'o1', transports: ['websocket'], extraHeaders: { Origin: 'https://good.example' } });
  ok.close();
  await assert.rejects(legacy(gw.http, { deviceId: 'o2', transports: ['websocket'], extraHeaders: { Origin: 'https://evil.example' } }), /origin not allowed/);
  const r = await fetch(`${gw.http}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: 'https://evil.example' } });
  assert.equal(r.headers.get('access-control-allow-origin'), null);
});

test('AUTH_KEY: the handshake authKey (or token) is checked as the old server did', { timeout: 60_000 }, async () => {
  const key = 'legacy-shared-key-0123456789abcdef';
  const gw = await startGateway({ AUTH_KEY: key });
  gateways.push(gw);
  for (const version of [4, 2]) {
    await assert.rejects(
      legacy(gw.http, { version, deviceId: `bad-${version}`, authKey: 'not-the-key', transports: ['websocket'] }),
      /unauthorized/,
      `socket.io-client ${version}.x with a wrong authKey`,
    );
    await assert.rejects(
      legacy(gw.http, { version, deviceId: `none-${version}`, transports: ['websocket'] }),
      /unauthorized/,
      `socket.io-client ${version}.x without an authKey`,
    );
    const ok = await legacy(gw.http, { version, deviceId: `good-${version}`, authKey: key });
    ok.emit('join-account');
    const peers = await ok.next('existing-peers');
    assert.ok(Array.isArray(peers));
    ok.close();
  }
  const m = await (await fetch(`${gw.http}/metrics`)).text();
  assert.match(m, /pantheon_auth_failures_total\{[^}]*reason="(invalid|missing)"[^}]*\} [1-9]/);
});

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

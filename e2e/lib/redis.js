// A redis-server with no persistence on a free loopback port, for tests that
// run several gateways as one system.
import { spawn } from 'node:child_process';
import { createConnection } from 'node:net';
import { freePort } from './gateway.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function pingRedis(port) {
  return new Promise((ok) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => s.write('PING\r\n'));
    s.setTimeout(500, () => { s.destroy(); ok(false); });
    s.on('data', (d) => { s.destroy(); ok(d.toString().startsWith('+PONG')); });
    s.on('error', () => ok(false));
  });
}

/** How many clients Redis counts as subscribed to `channel` (PUBSUB NUMSUB). */
export function numsub(port, channel) {
  return new Promise((ok, fail) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => {
      s.write(`*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n$${Buffer.byteLength(channel)}\r\n${channel}\r\n`);
    });
    let got = '';
    s.setTimeout(2000, () => { s.destroy(); fail(new Error('PUBSUB NUMSUB: no answer')); });
    s.on('data', (d) => {
      got += d;
      const m = /:(\d+)\r\n$/.exec(got);
      if (m) { s.destroy(); ok(Number(m[1])); }
    });
    s.on('error', fail);
  });
}

/** Starts `redis-server`; resolves once it answers PING. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  let exited = false;
  const exit = new Promise((r) => child.once('exit', () => { exited = true; r(); }));
  process.on('exit', () => { if (!exited) child.kill('SIGKILL'); });
  const deadline = Date.now() + 10_000;
  while (!(await pingRedis(port))) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not start:\n${out.slice(-2000)}`);
    }
    await sleep(50);
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (!exited) child.kill('SIGTERM');
      let timer;
      await Promise.race([exit, new Promise((ok) => { timer = setTimeout(ok, 5000); })]);
      clearTimeout(timer); // a pending timer would keep the test process alive for 5 s
      if (!exited) child.kill('SIGKILL');
    },
  };
}

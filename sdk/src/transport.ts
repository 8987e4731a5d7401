// The two transports behind one small interface: the client sends and
// receives protocol messages and learns once how the connection ended.

import { PantheonError } from './errors.js';
import type { ServerMessage } from './messages.js';

export type TransportKind = 'webtransport' | 'websocket';

/** How a transport ended. `code` follows WebSocket close codes; 1006 = abnormal. */
export interface CloseInfo {
  code: number;
  reason: string;
}

export interface Sink {
  message(m: ServerMessage): void;
  closed(info: CloseInfo): void;
}

export interface Transport {
  readonly kind: TransportKind;
  readonly url: string;
  send(m: object): void;
  /** Closes; `goodbye` ends the session (WebSocket 1000, WebTransport 0). */
  close(goodbye: boolean, reason?: string): void;
}

/** The subset of the WebSocket constructor the SDK uses (browsers, Node 22+, or `ws`). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;
export type WebTransportConstructor = new (url: string, options?: WebTransportOptions) => WebTransport;

/** Abnormal end, as a WebSocket reports a dropped TCP connection. */
export const ABNORMAL = 1006;

function timeout<T>(p: Promise<T>, ms: number, what: string, onTimeout?: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, fail) => {
      timer = setTimeout(() => {
        onTimeout?.();
        fail(new PantheonError('timeout', `${what} did not open within ${ms} ms`));
      }, ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function parse(text: string): ServerMessage | null {
  try {
    const m = JSON.parse(text);
    return m && typeof m === 'object' && typeof m.type === 'string' ? (m as ServerMessage) : null;
  } catch {
    return null;
  }
}

/** Opens a WebSocket with subprotocol `pantheon.v1`. */
export async function openWebSocket(
  url: string,
  Ctor: WebSocketConstructor,
  ms: number,
  sink: Sink,
): Promise<Transport> {
  const ws = new Ctor(url, 'pantheon.v1');
  let ended = false;
  const end = (info: CloseInfo) => {
    if (ended) return;
    ended = true;
    sink.closed(info);
  };
  await timeout(
    new Promise<void>((ok, fail) => {
      ws.onopen = () => ok();
      ws.onerror = () => fail(new PantheonError('connect_failed', `WebSocket ${url} failed to open`));
      ws.onclose = (ev) => fail(new PantheonError('connect_failed', `WebSocket ${url} closed while opening (${ev.code})`));
    }),
    ms,
    `WebSocket ${url}`,
    () => ws.close(),
  ).catch((e) => {
    ended = true;
    ws.onopen = ws.onerror = ws.onclose = null;
    throw e;
  });
  ws.onerror = null;
  ws.onmessage = (ev) => {
    if (typeof ev.data !== 'string') return;
    const m = parse(ev.data);
    if (m) sink.message(m);
  };
  ws.onclose = (ev) => end({ code: ev.code, reason: ev.reason });
  return {
    kind: 'websocket',
    url,
    send: (m) => {
      if (ws.readyState === 1) ws.send(JSON.stringify(m));
    },
    close: (goodbye, reason = '') => {
      // 4000: an application code that the server treats as a lost
      // connection (the session stays resumable), unlike 1000.
      try {
        ws.close(goodbye ? 1000 : 4000, reason);
      } catch {
        /* already closing */
      }
      end({ code: goodbye ? 1000 : ABNORMAL, reason });
    },
  };
}

/**
 * Opens a WebTransport session and its one bidirectional stream carrying
 * newline-delimited JSON.
 */
export async function openWebTransport(
  url: string,
  Ctor: WebTransportConstructor,
  ms: number,
  hashes: WebTransportHash[] | undefined,
  sink: Sink,
): Promise<Transport> {
  const options: WebTransportOptions = {};
  if (hashes && hashes.length) options.serverCertificateHashes = hashes;
  const wt = new Ctor(url, options);
  let ended = false;
  const end = (info: CloseInfo) => {
    if (ended) return;
    ended = true;
    sink.closed(info);
  };
  // Observed at once: a failed handshake must not be an unhandled rejection.
  const closed = wt.closed.then(
    (info) => ({ code: info.closeCode ?? 0, reason: info.reason ?? '' }),
    (e: Error) => ({ code: ABNORMAL, reason: `${e.name}: ${e.message}` }),
  );
  let stream: WebTransportBidirectionalStream;
  try {
    stream = await timeout(
      wt.ready.then(() => wt.createBidirectionalStream()),
      ms,
      `WebTransport ${url}`,
    );
  } catch (e) {
    ended = true;
    try {
      wt.close({ closeCode: 0, reason: 'open failed' });
    } catch {
      /* never opened */
    }
    if (e instanceof PantheonError) throw e;
    const why = await Promise.race([closed, new Promise((r) => setTimeout(r, 100, null))]);
    throw new PantheonError(
      'connect_failed',
      `WebTransport ${url} failed: ${(e as Error).message}${why ? ` (${(why as CloseInfo).reason})` : ''}`,
    );
  }
  const writer = stream.writable.getWriter();
  const encoder = new TextEncoder();
  void closed.then(end);
  void (async () => {
    const reader = stream.readable.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const m = line.trim() ? parse(line) : null;
          if (m && !ended) sink.message(m);
        }
      }
    } catch {
      /* the session's close says why */
    }
    // The stream ended: the session's close code follows if there is one.
    const info = await Promise.race([closed, new Promise<null>((r) => setTimeout(r, 250, null))]);
    end(info ?? { code: ABNORMAL, reason: 'stream ended' });
  })();
  return {
    kind: 'webtransport',
    url,
    send: (m) => {
      writer.write(encoder.encode(JSON.stringify(m) + '\n')).catch(() => {
        /* the close tells */
      });
    },
    close: (goodbye, reason = '') => {
      try {
        wt.close({ closeCode: goodbye ? 0 : 1, reason });
      } catch {
        /* already closed */
      }
      end({ code: goodbye ? 1000 : ABNORMAL, reason });
    },
  };
}

/** base64 → bytes, for a certificate hash fetched as JSON. */
export function fromBase64(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64);
  const bytes = new Uint8Array(new ArrayBuffer(bin.length));
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

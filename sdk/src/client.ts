// One Pantheon session that outlives its connections: transport choice,
// hello/welcome, typed requests, events in `seq` order exactly once, and
// reconnect-with-resume on any endpoint over either transport.

import { backoffDelay, type BackoffOptions } from './backoff.js';
import { endpointOf, type Endpoint } from './endpoints.js';
import { PantheonError, type ErrorCode } from './errors.js';
import { Emitter } from './events.js';
import type {
  BroadcastEvent,
  IceServer,
  Json,
  Meta,
  PeerInfo,
  PeerJoinedEvent,
  PeerLeftEvent,
  PeerUpdatedEvent,
  ReconnectNotice,
  ServerMessage,
  SignalEvent,
  Welcome,
} from './messages.js';
import { fetchRegions, probeRegions, type ProbeOptions, type RegionProbe } from './regions.js';
import {
  fromBase64,
  openWebSocket,
  openWebTransport,
  type CloseInfo,
  type Sink,
  type Transport,
  type TransportKind,
  type WebSocketConstructor,
  type WebTransportConstructor,
} from './transport.js';

/**
 * `connecting`: the first connection is being opened. `open`: a session is
 * attached. `resuming`: the connection was lost (or the server asked to move)
 * and the client is reconnecting; requests wait. `closed`: for good.
 */
export type State = 'connecting' | 'open' | 'resuming' | 'closed';

export interface ConnectOptions {
  /** `auto` (default): WebTransport when available, else WebSocket. */
  transport?: 'auto' | 'webtransport' | 'websocket';
  /** How long WebTransport may take to open before falling back (default 3 000 ms). */
  webTransportTimeoutMs?: number;
  /** How long a WebSocket may take to open (default 5 000 ms). */
  webSocketTimeoutMs?: number;
  /**
   * WebTransport `serverCertificateHashes`: `'fetch'` gets the gateway's
   * self-signed development certificate hash from `/webtransport/cert-hash`
   * before each WebTransport attempt (a 404 means: a real certificate, no
   * hash needed). Or give the hashes yourself. Default: none.
   */
  certificateHash?: 'fetch' | WebTransportHash[];
  /** UDP port of WebTransport when it differs from the HTTP port (`WT_PORT`). */
  wtPort?: number;
  /** `hello.token` (JWT or `AUTH_KEY`) when the gateway has auth on. */
  token?: string;
  /**
   * `'auto'`: fetch `/regions` from the (first) URL, probe each region's
   * `/health`, connect to the lowest median RTT and fall back in RTT order.
   */
  regions?: 'auto' | false;
  /** Options of the region probes. */
  probe?: ProbeOptions;
  /** Reconnect and resume after a lost connection (default on). */
  reconnect?: boolean | (BackoffOptions & { maxAttempts?: number });
  /** Rejoin rooms (with their last meta) when a session could not be resumed (default true). */
  rejoin?: boolean;
  /** Request timeout (default 10 000 ms). */
  requestTimeoutMs?: number;
  /** How long `welcome` may take after `hello` (default 10 000 ms). */
  helloTimeoutMs?: number;
  /**
   * Client heartbeat: a `ping` this often; a connection silent for twice as
   * long counts as lost. Default: the server's `heartbeat_ms`, at most
   * 15 000. 0 turns it off.
   */
  heartbeatMs?: number;
  /** WebSocket implementation (default: the global one; in Node 20 pass `ws`). */
  WebSocket?: WebSocketConstructor;
  /** WebTransport implementation (default: the global one); `null` disables it. */
  WebTransport?: WebTransportConstructor | null;
  /** fetch implementation (default: the global one). */
  fetch?: typeof fetch;
}

export interface StateEvent {
  state: State;
  /** On `open`: whether the session was resumed (false: a new session and peer). */
  resumed?: boolean;
  peer?: string;
  transport?: TransportKind;
  server?: string;
  /** On `closed`: why, when it was not `close()`. */
  error?: PantheonError;
}

/** One transport attempt, for diagnostics (the last 50 are kept). */
export interface Attempt {
  endpoint: string;
  transport: TransportKind;
  ok: boolean;
  error?: string;
  ms: number;
}

export interface ClientEvents {
  peer_joined: PeerJoinedEvent;
  peer_left: PeerLeftEvent;
  peer_updated: PeerUpdatedEvent;
  signal: SignalEvent;
  broadcast: BroadcastEvent;
  state: StateEvent;
  /** The server is going away (drain); the client is moving the session. */
  reconnect: ReconnectNotice;
  /** After a session could not be resumed: a room was joined again. */
  rejoined: { room: string; peers: PeerInfo[] };
  /** An error not tied to a request (e.g. `rate_limited` for a message without id). */
  error: PantheonError;
}

interface Pending {
  msg: { type: string; id: number; [k: string]: unknown };
  expect: string;
  resolve: (m: ServerMessage) => void;
  reject: (e: PantheonError) => void;
  timer: ReturnType<typeof setTimeout>;
  sent: boolean;
}

const FATAL_CLOSE: Record<number, ErrorCode> = { 4001: 'bad_request', 4002: 'unsupported_version', 4003: 'unauthorized' };
const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Client extends Emitter<ClientEvents> {
  /** The current state (see {@link State}). */
  state: State = 'connecting';
  /** This session's peer id (changes only when a resume fails). */
  peer = '';
  /** The resume token. */
  session = '';
  /** The last `seq` processed. */
  lastSeq = 0;
  /** The latest `welcome`. */
  welcome: Welcome | undefined;
  /** Endpoints in the order they are tried (nearest region first with `regions: 'auto'`). */
  endpoints: Endpoint[] = [];
  /** Region probes, with `regions: 'auto'`. */
  regionProbes: RegionProbe[] | undefined;
  /** The last transport attempts (diagnostics). */
  readonly attempts: Attempt[] = [];

  private readonly opts: ConnectOptions;
  private current: Transport | null = null;
  private index = 0;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly rooms = new Map<string, Meta | undefined>();
  private reconnecting = false;
  private readonly wtBroken = new Set<string>();
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private lastRecv = 0;

  /** Use {@link connect}. */
  constructor(options: ConnectOptions = {}) {
    super();
    this.opts = options;
  }

  /** The transport of the current connection. */
  get transport(): TransportKind | undefined {
    return this.current?.kind;
  }
  /** The gateway instance (`welcome.server`) of the current session. */
  get server(): string | undefined {
    return this.welcome?.server;
  }
  /** The endpoint of the current (or last) connection. */
  get endpoint(): Endpoint | undefined {
    return this.endpoints[this.index];
  }
  /** ICE servers for RTCPeerConnection, from `welcome`. */
  get iceServers(): IceServer[] {
    return this.welcome?.ice_servers ?? [];
  }
  /** The rooms this session is in, with the meta it joined or updated with. */
  get joinedRooms(): string[] {
    return [...this.rooms.keys()];
  }

  // --- requests -------------------------------------------------------------

  /** Joins `room`; resolves with the other members. */
  async join(room: string, meta?: Meta): Promise<PeerInfo[]> {
    const m = await this.request({ type: 'join', room, ...(meta ? { meta } : {}) }, 'joined');
    this.rooms.set(room, meta);
    return m.peers as PeerInfo[];
  }

  async leave(room: string): Promise<void> {
    await this.request({ type: 'leave', room }, 'left');
    this.rooms.delete(room);
  }

  /** Sends `data` to peer `to` in `room`; resolves when the gateway accepted it. */
  async signal(room: string, to: string, data: Json): Promise<void> {
    await this.request({ type: 'signal', room, to, data }, 'ack');
  }

  async broadcast(room: string, data: Json): Promise<void> {
    await this.request({ type: 'broadcast', room, data }, 'ack');
  }

  async update(room: string, meta: Meta): Promise<void> {
    await this.request({ type: 'update', room, meta }, 'ack');
    if (this.rooms.has(room)) this.rooms.set(room, meta);
  }

  /** The other members of `room`, now. */
  async peers(room: string): Promise<PeerInfo[]> {
    const m = await this.request({ type: 'peers', room }, 'peers');
    return m.peers as PeerInfo[];
  }

  /** A `ping`; resolves with the round-trip time in ms (the signaling latency). */
  async ping(): Promise<number> {
    const t0 = now();
    await this.request({ type: 'ping' }, 'pong');
    return now() - t0;
  }

  /** Ends the session with a goodbye (others see `peer_left` `left`). */
  close(): void {
    if (this.state === 'closed') return;
    const t = this.current;
    this.current = null;
    t?.close(true, 'client closed');
    this.finish(undefined);
  }

  private request(body: { type: string; [k: string]: unknown }, expect: string): Promise<ServerMessage> {
    if (this.state === 'closed') {
      return Promise.reject(new PantheonError('closed', 'the client is closed', { request: body.type }));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const ms = this.opts.requestTimeoutMs ?? 10_000;
      const p: Pending = {
        msg: { ...body, id },
        expect,
        resolve,
        reject,
        sent: false,
        timer: setTimeout(() => {
          this.pending.delete(id);
          reject(new PantheonError('timeout', `${body.type} got no reply within ${ms} ms`, { request: body.type }));
        }, ms),
      };
      this.pending.set(id, p);
      if (this.state === 'open' && this.current) {
        this.current.send(p.msg);
        p.sent = true;
      }
    });
  }

  // --- connecting -------------------------------------------------------------

  /** @internal Resolves the endpoints and opens the first session. */
  async start(urls: string[]): Promise<void> {
    const given = urls.map((u) => endpointOf(u, this.opts.wtPort));
    this.endpoints = given;
    if (this.opts.regions === 'auto' && urls.length) {
      try {
        const list = await fetchRegions(urls[0], this.opts.fetch ?? fetch);
        const probes = await probeRegions(list.regions, { fetch: this.opts.fetch, ...this.opts.probe });
        this.regionProbes = probes;
        const seen = new Set(probes.map((p) => p.endpoint.http));
        // Nearest first; the URLs given stay as the last resort.
        this.endpoints = [...probes.map((p) => p.endpoint), ...given.filter((e) => !seen.has(e.http))];
      } catch {
        // No region list (an older gateway): the URLs as given.
      }
    }
    let last: unknown;
    for (let i = 0; i < this.endpoints.length; i++) {
      if (this.state === 'closed') break;
      try {
        await this.handshake(i);
        return;
      } catch (e) {
        last = e;
        if (e instanceof PantheonError && isFatal(e.code)) break;
      }
    }
    const err =
      last instanceof PantheonError && (isFatal(last.code) || last.code === 'unsupported')
        ? last
        : new PantheonError('connect_failed', `no connection to ${this.endpoints.map((e) => e.http).join(', ')}: ${(last as Error)?.message ?? 'closed'}`);
    this.finish(err);
    throw err;
  }

  private record(a: Attempt): void {
    this.attempts.push(a);
    if (this.attempts.length > 50) this.attempts.shift();
  }

  private async certHashes(e: Endpoint): Promise<WebTransportHash[] | undefined> {
    const h = this.opts.certificateHash;
    if (h === undefined) return undefined;
    if (h !== 'fetch') return h;
    const f = this.opts.fetch ?? fetch;
    const r = await f(`${e.http}/webtransport/cert-hash`, { cache: 'no-store', signal: AbortSignal.timeout(5000) });
    if (r.status === 404) return undefined; // a certificate browsers trust: no hash needed
    if (!r.ok) throw new Error(`GET ${e.http}/webtransport/cert-hash: HTTP ${r.status}`);
    const body = (await r.json()) as { algorithm: string; value: string };
    return [{ algorithm: body.algorithm, value: fromBase64(body.value) }];
  }

  private async openTransport(e: Endpoint, sink: Sink): Promise<Transport> {
    const mode = this.opts.transport ?? 'auto';
    const g = globalThis as { WebTransport?: WebTransportConstructor; WebSocket?: WebSocketConstructor };
    const WT = this.opts.WebTransport === undefined ? g.WebTransport : this.opts.WebTransport;
    const WS = this.opts.WebSocket ?? g.WebSocket;
    let wtFailed = false;
    if (mode !== 'websocket' && WT && e.wt && !(mode === 'auto' && this.wtBroken.has(e.http))) {
      const t0 = now();
      try {
        const hashes = await this.certHashes(e);
        const t = await openWebTransport(e.wt, WT, this.opts.webTransportTimeoutMs ?? 3000, hashes, sink);
        this.record({ endpoint: e.wt, transport: 'webtransport', ok: true, ms: now() - t0 });
        return t;
      } catch (err) {
        this.record({ endpoint: e.wt, transport: 'webtransport', ok: false, error: (err as Error).message, ms: now() - t0 });
        if (mode === 'webtransport') throw err;
        wtFailed = true;
      }
    } else if (mode === 'webtransport') {
      throw new PantheonError('unsupported', WT ? `${e.http} offers no WebTransport URL` : 'WebTransport is not available here');
    }
    if (!WS) throw new PantheonError('unsupported', 'no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package)');
    const t0 = now();
    try {
      const t = await openWebSocket(e.ws, WS, this.opts.webSocketTimeoutMs ?? 5000, sink);
      this.record({ endpoint: e.ws, transport: 'websocket', ok: true, ms: now() - t0 });
      // WebTransport failed where a WebSocket works: UDP is filtered or the
      // certificate is not accepted. Later reconnects to this endpoint go
      // straight to WebSocket instead of waiting for the same failure.
      if (wtFailed) this.wtBroken.add(e.http);
      return t;
    } catch (err) {
      this.record({ endpoint: e.ws, transport: 'websocket', ok: false, error: (err as Error).message, ms: now() - t0 });
      throw err;
    }
  }

  /** Opens a connection to endpoint `i`, says hello (resuming when there is a session) and adopts it. */
  private async handshake(i: number): Promise<void> {
    const helloId = this.nextId++;
    let t: Transport | null = null;
    let welcomed = false;
    let settle!: { ok: () => void; fail: (e: PantheonError) => void };
    const done = new Promise<void>((ok, fail) => (settle = { ok, fail }));
    const sink: Sink = {
      message: (m) => {
        if (!welcomed) {
          if (m.type === 'welcome' && m.id === helloId && t) {
            welcomed = true;
            // Synchronously: the replayed messages may follow in the same chunk.
            this.adopt(t, i, m as unknown as Welcome);
            settle.ok();
          } else if (m.type === 'error') {
            settle.fail(new PantheonError(m.code as ErrorCode, `hello refused: ${m.message as string}`));
          }
          return;
        }
        if (t === this.current) this.onMessage(m);
      },
      closed: (info) => {
        if (!welcomed) {
          settle.fail(
            new PantheonError(FATAL_CLOSE[info.code] ?? 'connect_failed', `closed before welcome (${info.code} ${info.reason})`, {
              closeCode: info.code,
            }),
          );
        } else if (t === this.current) {
          this.onTransportClosed(info);
        }
      },
    };
    t = await this.openTransport(this.endpoints[i], sink);
    if (this.state === 'closed') {
      t.close(false);
      throw new PantheonError('closed', 'the client is closed');
    }
    const hello: Record<string, unknown> = { type: 'hello', v: 1, id: helloId };
    if (this.opts.token) hello.token = this.opts.token;
    if (this.session) hello.resume = { session: this.session, last_seq: this.lastSeq };
    t.send(hello);
    const ms = this.opts.helloTimeoutMs ?? 10_000;
    const timer = setTimeout(() => settle.fail(new PantheonError('timeout', `no welcome within ${ms} ms`)), ms);
    try {
      await done;
    } catch (e) {
      t.close(false, 'handshake failed');
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private adopt(t: Transport, i: number, w: Welcome): void {
    const old = this.current;
    const lost = !w.resumed && this.session !== '';
    this.current = t;
    this.index = i;
    this.welcome = w;
    this.peer = w.peer;
    this.session = w.session;
    this.reconnecting = false;
    // After a move the older connection has been taken over; close it
    // without a goodbye (a goodbye would end the session).
    if (old && old !== t) old.close(false, 'moved');
    if (lost) {
      this.lastSeq = 0;
      for (const [id, p] of this.pending) {
        if (!p.sent) continue;
        clearTimeout(p.timer);
        this.pending.delete(id);
        p.reject(new PantheonError('session_lost', `${p.msg.type}: the session could not be resumed`, { request: p.msg.type }));
      }
    }
    this.startHeartbeat(w);
    this.setState({ state: 'open', resumed: w.resumed, peer: w.peer, transport: t.kind, server: w.server });
    if (lost && this.opts.rejoin !== false) {
      const rooms = [...this.rooms];
      this.rooms.clear();
      for (const [room, meta] of rooms) {
        this.join(room, meta).then(
          (peers) => this.emit('rejoined', { room, peers }),
          (e: PantheonError) => this.emit('error', e),
        );
      }
    }
    for (const p of this.pending.values()) {
      if (p.sent || this.current !== t) continue;
      t.send(p.msg);
      p.sent = true;
    }
  }

  // --- receiving --------------------------------------------------------------

  private onMessage(m: ServerMessage): void {
    this.lastRecv = now();
    if (typeof m.seq === 'number') {
      // A message replayed after a resume that was already processed.
      if (m.seq <= this.lastSeq) return;
      if (m.seq !== this.lastSeq + 1) {
        this.emit('error', new PantheonError('internal', `seq ${m.seq} after ${this.lastSeq}: messages were lost`));
      }
      this.lastSeq = m.seq;
    }
    if (typeof m.id === 'number') {
      // A reply. Replies to timed-out requests and heartbeat pings are dropped.
      const p = this.pending.get(m.id);
      if (p && (m.type === p.expect || m.type === 'error')) {
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.type === 'error') {
          p.reject(new PantheonError(m.code as ErrorCode, (m.message as string) ?? String(m.code), { request: p.msg.type }));
        } else {
          p.resolve(m);
        }
      }
      return;
    }
    switch (m.type) {
      case 'peer_joined':
      case 'peer_updated':
        this.emit(m.type, { room: m.room as string, peer: m.peer as string, meta: (m.meta ?? {}) as Meta });
        break;
      case 'peer_left':
        this.emit('peer_left', { room: m.room as string, peer: m.peer as string, reason: m.reason as PeerLeftEvent['reason'] });
        break;
      case 'signal':
      case 'broadcast':
        this.emit(m.type, { room: m.room as string, from: m.from as string, data: m.data as Json });
        break;
      case 'reconnect': {
        const notice = { reason: String(m.reason ?? ''), after_ms: Number(m.after_ms ?? 0) };
        this.emit('reconnect', notice);
        // Move while the old connection still delivers: the new one resumes
        // from the last seq processed, duplicates are dropped by seq.
        this.reconnect(true, notice.after_ms);
        break;
      }
      case 'error':
        this.emit('error', new PantheonError(m.code as ErrorCode, (m.message as string) ?? String(m.code)));
        break;
      default:
        break;
    }
  }

  private onTransportClosed(info: CloseInfo): void {
    this.current = null;
    this.stopHeartbeat();
    if (this.state === 'closed') return;
    const fatal = FATAL_CLOSE[info.code];
    if (fatal) {
      this.finish(new PantheonError(fatal, `closed by the server (${info.code} ${info.reason})`, { closeCode: info.code }));
      return;
    }
    if (info.code === 4010) {
      this.finish(new PantheonError('taken_over', 'another connection resumed this session', { closeCode: 4010 }));
      return;
    }
    if (this.reconnecting) return; // already moving (drain)
    if (this.opts.reconnect === false) {
      this.finish(new PantheonError('closed', `connection closed (${info.code} ${info.reason})`, { closeCode: info.code }));
      return;
    }
    // 1001/1012: this instance is going away, another is more likely to answer.
    this.reconnect(info.code === 1001 || info.code === 1012, 0);
  }

  private reconnect(preferOther: boolean, delayMs: number): void {
    if (this.reconnecting || this.state === 'closed') return;
    this.reconnecting = true;
    this.setState({ state: 'resuming' });
    const o = typeof this.opts.reconnect === 'object' ? this.opts.reconnect : {};
    const n = this.endpoints.length;
    const first = preferOther && n > 1 ? (this.index + 1) % n : this.index;
    void (async () => {
      // Full jitter before the first attempt: clients cut off together do
      // not all come back in the same millisecond.
      await sleep(delayMs + Math.random() * (o.initialDelayMs ?? 250) * (o.jitter ?? 0.5));
      let last: unknown;
      for (let attempt = 0; !this.isClosed(); attempt++) {
        for (let k = 0; k < n && !this.isClosed(); k++) {
          try {
            await this.handshake((first + k) % n);
            return;
          } catch (e) {
            last = e;
            if (e instanceof PantheonError && isFatal(e.code)) {
              this.finish(e);
              return;
            }
          }
        }
        if (o.maxAttempts !== undefined && attempt + 1 >= o.maxAttempts) {
          this.finish(new PantheonError('connect_failed', `reconnect failed after ${attempt + 1} rounds: ${(last as Error)?.message}`));
          return;
        }
        await sleep(backoffDelay(attempt, o));
      }
    })();
  }

  private startHeartbeat(w: Welcome): void {
    this.stopHeartbeat();
    this.lastRecv = now();
    const every = this.opts.heartbeatMs ?? Math.min(w.heartbeat_ms || 25_000, 15_000);
    if (!every) return;
    this.heartbeat = setInterval(() => {
      const t = this.current;
      if (!t) return;
      if (now() - this.lastRecv > 2 * every) {
        // Silent too long: treat as lost (the session stays resumable).
        t.close(false, 'heartbeat timeout');
        return;
      }
      t.send({ type: 'ping', id: this.nextId++ });
    }, every);
  }

  private stopHeartbeat(): void {
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  private isClosed(): boolean {
    return this.state === 'closed';
  }

  private setState(ev: StateEvent): void {
    this.state = ev.state;
    this.emit('state', ev);
  }

  private finish(error: PantheonError | undefined): void {
    if (this.state === 'closed') return;
    this.stopHeartbeat();
    this.reconnecting = false;
    const t = this.current;
    this.current = null;
    t?.close(false, 'closed');
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error ?? new PantheonError('closed', 'the client was closed', { request: p.msg.type }));
    }
    this.pending.clear();
    this.setState(error ? { state: 'closed', error } : { state: 'closed' });
  }
}

function isFatal(code: ErrorCode): boolean {
  return code === 'unauthorized' || code === 'unsupported_version' || code === 'closed';
}

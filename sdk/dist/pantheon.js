// src/backoff.ts
function backoffDelay(attempt, o = {}, random = Math.random) {
  const initial = o.initialDelayMs ?? 250;
  const max = o.maxDelayMs ?? 1e4;
  const factor = o.factor ?? 2;
  const jitter = Math.min(Math.max(o.jitter ?? 0.5, 0), 1);
  const d = Math.min(max, initial * Math.pow(factor, Math.min(attempt, 64)));
  return Math.round(d * (1 - jitter * random()));
}

// src/endpoints.ts
function endpointOf(base, wtPort) {
  const u = new URL(base);
  const secure = u.protocol === "https:" || u.protocol === "wss:";
  if (!["http:", "https:", "ws:", "wss:"].includes(u.protocol)) {
    throw new TypeError(`gateway URL ${base}: expected http(s):// or ws(s)://`);
  }
  const host = u.host;
  const http = `${secure ? "https" : "http"}://${host}`;
  const ws = `${secure ? "wss" : "ws"}://${host}/ws`;
  const port = wtPort ?? (u.port ? Number(u.port) : secure ? 443 : 80);
  const wt = `https://${u.hostname.includes(":") ? `[${u.hostname.replace(/^\[|\]$/g, "")}]` : u.hostname}:${port}/wt`;
  return { http, ws, wt };
}
function endpointOfRegion(r) {
  if (!r.ws_url && !r.wt_url) return null;
  let http;
  if (r.ws_url) {
    const u = new URL(r.ws_url);
    http = `${u.protocol === "wss:" ? "https" : "http"}://${u.host}`;
  } else {
    http = new URL(r.wt_url).origin;
  }
  const e = { http, ws: r.ws_url ?? "", region: r.region };
  if (r.wt_url) e.wt = r.wt_url;
  return e;
}

// src/errors.ts
var PantheonError = class extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "PantheonError";
    this.code = code;
    this.request = extra.request;
    this.closeCode = extra.closeCode;
  }
};

// src/events.ts
var Emitter = class {
  constructor() {
    this.listeners = /* @__PURE__ */ new Map();
  }
  /** Calls `fn` for every `type` event; returns a function that unsubscribes. */
  on(type, fn) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, set = /* @__PURE__ */ new Set());
    set.add(fn);
    return () => this.off(type, fn);
  }
  off(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }
  /** Resolves with the next `type` event that satisfies `pred`. */
  once(type, pred = () => true) {
    return new Promise((resolve) => {
      const off = this.on(type, (ev) => {
        if (!pred(ev)) return;
        off();
        resolve(ev);
      });
    });
  }
  emit(type, ev) {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(ev);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
};

// src/regions.ts
async function fetchRegions(base, f = fetch, timeoutMs = 5e3) {
  const url = new URL("/regions", base).toString();
  const r = await f(url, { cache: "no-store", signal: AbortSignal.timeout(timeoutMs) });
  if (!r.ok) throw new Error(`GET ${url}: HTTP ${r.status}`);
  const body = await r.json();
  if (!body || !Array.isArray(body.regions)) throw new Error(`GET ${url}: no "regions" array`);
  return body;
}
function median(xs) {
  if (xs.length === 0) return Infinity;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}
async function probeOne(e, o, f) {
  const url = `${e.http}/health`;
  const rtts = [];
  for (let i = 0; i < o.probes; i++) {
    const t0 = performance.now();
    try {
      const r = await f(url, { cache: "no-store", signal: AbortSignal.timeout(o.timeoutMs) });
      await r.arrayBuffer();
      if (r.ok) rtts.push(performance.now() - t0);
    } catch {
    }
  }
  return rtts;
}
async function probeRegions(regions, o = {}) {
  const f = o.fetch ?? fetch;
  const opts = { probes: Math.max(1, o.probes ?? 3), timeoutMs: o.timeoutMs ?? 2e3 };
  const candidates = regions.map((r) => ({ r, e: endpointOfRegion(r) })).filter((c) => c.e !== null);
  const probed = await Promise.all(
    candidates.map(async ({ r, e }) => {
      const rtts = await probeOne(e, opts, f);
      return { region: r.region, endpoint: e, rtts, median: median(rtts) };
    })
  );
  return probed.map((p, i) => ({ p, i })).sort((a, b) => a.p.median === b.p.median ? a.i - b.i : a.p.median < b.p.median ? -1 : 1).map(({ p }) => p);
}

// src/transport.ts
var ABNORMAL = 1006;
function timeout(p, ms, what, onTimeout) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, fail) => {
      timer = setTimeout(() => {
        onTimeout?.();
        fail(new PantheonError("timeout", `${what} did not open within ${ms} ms`));
      }, ms);
    })
  ]).finally(() => clearTimeout(timer));
}
function parse(text) {
  try {
    const m = JSON.parse(text);
    return m && typeof m === "object" && typeof m.type === "string" ? m : null;
  } catch {
    return null;
  }
}
async function openWebSocket(url, Ctor, ms, sink) {
  const ws = new Ctor(url, "pantheon.v1");
  let ended = false;
  const end = (info) => {
    if (ended) return;
    ended = true;
    sink.closed(info);
  };
  await timeout(
    new Promise((ok, fail) => {
      ws.onopen = () => ok();
      ws.onerror = () => fail(new PantheonError("connect_failed", `WebSocket ${url} failed to open`));
      ws.onclose = (ev) => fail(new PantheonError("connect_failed", `WebSocket ${url} closed while opening (${ev.code})`));
    }),
    ms,
    `WebSocket ${url}`,
    () => ws.close()
  ).catch((e) => {
    ended = true;
    ws.onopen = ws.onerror = ws.onclose = null;
    throw e;
  });
  ws.onerror = null;
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") return;
    const m = parse(ev.data);
    if (m) sink.message(m);
  };
  ws.onclose = (ev) => end({ code: ev.code, reason: ev.reason });
  return {
    kind: "websocket",
    url,
    send: (m) => {
      if (ws.readyState === 1) ws.send(JSON.stringify(m));
    },
    close: (goodbye, reason = "") => {
      try {
        ws.close(goodbye ? 1e3 : 4e3, reason);
      } catch {
      }
      end({ code: goodbye ? 1e3 : ABNORMAL, reason });
    }
  };
}
async function openWebTransport(url, Ctor, ms, hashes, sink) {
  const options = {};
  if (hashes && hashes.length) options.serverCertificateHashes = hashes;
  const wt = new Ctor(url, options);
  let ended = false;
  const end = (info) => {
    if (ended) return;
    ended = true;
    sink.closed(info);
  };
  const closed = wt.closed.then(
    (info) => ({ code: info.closeCode ?? 0, reason: info.reason ?? "" }),
    (e) => ({ code: ABNORMAL, reason: `${e.name}: ${e.message}` })
  );
  let stream;
  try {
    stream = await timeout(
      wt.ready.then(() => wt.createBidirectionalStream()),
      ms,
      `WebTransport ${url}`
    );
  } catch (e) {
    ended = true;
    try {
      wt.close({ closeCode: 0, reason: "open failed" });
    } catch {
    }
    if (e instanceof PantheonError) throw e;
    const why = await Promise.race([closed, new Promise((r) => setTimeout(r, 100, null))]);
    throw new PantheonError(
      "connect_failed",
      `WebTransport ${url} failed: ${e.message}${why ? ` (${why.reason})` : ""}`
    );
  }
  const writer = stream.writable.getWriter();
  const encoder = new TextEncoder();
  void closed.then(end);
  void (async () => {
    const reader = stream.readable.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for (; ; ) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const m = line.trim() ? parse(line) : null;
          if (m && !ended) sink.message(m);
        }
      }
    } catch {
    }
    const info = await Promise.race([closed, new Promise((r) => setTimeout(r, 250, null))]);
    end(info ?? { code: ABNORMAL, reason: "stream ended" });
  })();
  return {
    kind: "webtransport",
    url,
    send: (m) => {
      writer.write(encoder.encode(JSON.stringify(m) + "\n")).catch(() => {
      });
    },
    close: (goodbye, reason = "") => {
      try {
        wt.close({ closeCode: goodbye ? 0 : 1, reason });
      } catch {
      }
      end({ code: goodbye ? 1e3 : ABNORMAL, reason });
    }
  };
}
function fromBase64(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(new ArrayBuffer(bin.length));
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

// src/client.ts
var FATAL_CLOSE = { 4001: "bad_request", 4002: "unsupported_version", 4003: "unauthorized" };
var now = () => typeof performance !== "undefined" ? performance.now() : Date.now();
var sleep = (ms) => new Promise((r) => setTimeout(r, ms));
var Client = class extends Emitter {
  /** Use {@link connect}. */
  constructor(options = {}) {
    super();
    /** The current state (see {@link State}). */
    this.state = "connecting";
    /** This session's peer id (changes only when a resume fails). */
    this.peer = "";
    /** The resume token. */
    this.session = "";
    /** The last `seq` processed. */
    this.lastSeq = 0;
    /** Endpoints in the order they are tried (nearest region first with `regions: 'auto'`). */
    this.endpoints = [];
    /** The last transport attempts (diagnostics). */
    this.attempts = [];
    this.current = null;
    this.index = 0;
    this.nextId = 1;
    this.pending = /* @__PURE__ */ new Map();
    this.rooms = /* @__PURE__ */ new Map();
    this.reconnecting = false;
    this.wtBroken = /* @__PURE__ */ new Set();
    this.lastRecv = 0;
    this.opts = options;
  }
  /** The transport of the current connection. */
  get transport() {
    return this.current?.kind;
  }
  /** The gateway instance (`welcome.server`) of the current session. */
  get server() {
    return this.welcome?.server;
  }
  /** The endpoint of the current (or last) connection. */
  get endpoint() {
    return this.endpoints[this.index];
  }
  /** ICE servers for RTCPeerConnection, from `welcome`. */
  get iceServers() {
    return this.welcome?.ice_servers ?? [];
  }
  /** The rooms this session is in, with the meta it joined or updated with. */
  get joinedRooms() {
    return [...this.rooms.keys()];
  }
  // --- requests -------------------------------------------------------------
  /** Joins `room`; resolves with the other members. */
  async join(room, meta) {
    const m = await this.request({ type: "join", room, ...meta ? { meta } : {} }, "joined");
    this.rooms.set(room, meta);
    return m.peers;
  }
  async leave(room) {
    await this.request({ type: "leave", room }, "left");
    this.rooms.delete(room);
  }
  /** Sends `data` to peer `to` in `room`; resolves when the gateway accepted it. */
  async signal(room, to, data) {
    await this.request({ type: "signal", room, to, data }, "ack");
  }
  async broadcast(room, data) {
    await this.request({ type: "broadcast", room, data }, "ack");
  }
  async update(room, meta) {
    await this.request({ type: "update", room, meta }, "ack");
    if (this.rooms.has(room)) this.rooms.set(room, meta);
  }
  /** The other members of `room`, now. */
  async peers(room) {
    const m = await this.request({ type: "peers", room }, "peers");
    return m.peers;
  }
  /** A `ping`; resolves with the round-trip time in ms (the signaling latency). */
  async ping() {
    const t0 = now();
    await this.request({ type: "ping" }, "pong");
    return now() - t0;
  }
  /** Ends the session with a goodbye (others see `peer_left` `left`). */
  close() {
    if (this.state === "closed") return;
    const t = this.current;
    this.current = null;
    t?.close(true, "client closed");
    this.finish(void 0);
  }
  request(body, expect) {
    if (this.state === "closed") {
      return Promise.reject(new PantheonError("closed", "the client is closed", { request: body.type }));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const ms = this.opts.requestTimeoutMs ?? 1e4;
      const p = {
        msg: { ...body, id },
        expect,
        resolve,
        reject,
        sent: false,
        timer: setTimeout(() => {
          this.pending.delete(id);
          reject(new PantheonError("timeout", `${body.type} got no reply within ${ms} ms`, { request: body.type }));
        }, ms)
      };
      this.pending.set(id, p);
      if (this.state === "open" && this.current) {
        this.current.send(p.msg);
        p.sent = true;
      }
    });
  }
  // --- connecting -------------------------------------------------------------
  /** @internal Resolves the endpoints and opens the first session. */
  async start(urls) {
    const given = urls.map((u) => endpointOf(u, this.opts.wtPort));
    this.endpoints = given;
    if (this.opts.regions === "auto" && urls.length) {
      try {
        const list = await fetchRegions(urls[0], this.opts.fetch ?? fetch);
        const probes = await probeRegions(list.regions, { fetch: this.opts.fetch, ...this.opts.probe });
        this.regionProbes = probes;
        const seen = new Set(probes.map((p) => p.endpoint.http));
        this.endpoints = [...probes.map((p) => p.endpoint), ...given.filter((e) => !seen.has(e.http))];
      } catch {
      }
    }
    let last;
    for (let i = 0; i < this.endpoints.length; i++) {
      if (this.state === "closed") break;
      try {
        await this.handshake(i);
        return;
      } catch (e) {
        last = e;
        if (e instanceof PantheonError && isFatal(e.code)) break;
      }
    }
    const err = last instanceof PantheonError && (isFatal(last.code) || last.code === "unsupported") ? last : new PantheonError("connect_failed", `no connection to ${this.endpoints.map((e) => e.http).join(", ")}: ${last?.message ?? "closed"}`);
    this.finish(err);
    throw err;
  }
  record(a) {
    this.attempts.push(a);
    if (this.attempts.length > 50) this.attempts.shift();
  }
  async certHashes(e) {
    const h = this.opts.certificateHash;
    if (h === void 0) return void 0;
    if (h !== "fetch") return h;
    const f = this.opts.fetch ?? fetch;
    const r = await f(`${e.http}/webtransport/cert-hash`, { cache: "no-store", signal: AbortSignal.timeout(5e3) });
    if (r.status === 404) return void 0;
    if (!r.ok) throw new Error(`GET ${e.http}/webtransport/cert-hash: HTTP ${r.status}`);
    const body = await r.json();
    return [{ algorithm: body.algorithm, value: fromBase64(body.value) }];
  }
  async openTransport(e, sink) {
    const mode = this.opts.transport ?? "auto";
    const g = globalThis;
    const WT = this.opts.WebTransport === void 0 ? g.WebTransport : this.opts.WebTransport;
    const WS = this.opts.WebSocket ?? g.WebSocket;
    let wtFailed = false;
    if (mode !== "websocket" && WT && e.wt && !(mode === "auto" && this.wtBroken.has(e.http))) {
      const t02 = now();
      try {
        const hashes = await this.certHashes(e);
        const t = await openWebTransport(e.wt, WT, this.opts.webTransportTimeoutMs ?? 3e3, hashes, sink);
        this.record({ endpoint: e.wt, transport: "webtransport", ok: true, ms: now() - t02 });
        return t;
      } catch (err) {
        this.record({ endpoint: e.wt, transport: "webtransport", ok: false, error: err.message, ms: now() - t02 });
        if (mode === "webtransport") throw err;
        wtFailed = true;
      }
    } else if (mode === "webtransport") {
      throw new PantheonError("unsupported", WT ? `${e.http} offers no WebTransport URL` : "WebTransport is not available here");
    }
    if (!WS) throw new PantheonError("unsupported", "no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package)");
    const t0 = now();
    try {
      const t = await openWebSocket(e.ws, WS, this.opts.webSocketTimeoutMs ?? 5e3, sink);
      this.record({ endpoint: e.ws, transport: "websocket", ok: true, ms: now() - t0 });
      if (wtFailed) this.wtBroken.add(e.http);
      return t;
    } catch (err) {
      this.record({ endpoint: e.ws, transport: "websocket", ok: false, error: err.message, ms: now() - t0 });
      throw err;
    }
  }
  /** Opens a connection to endpoint `i`, says hello (resuming when there is a session) and adopts it. */
  async handshake(i) {
    const helloId = this.nextId++;
    let t = null;
    let welcomed = false;
    let settle;
    const done = new Promise((ok, fail) => settle = { ok, fail });
    const sink = {
      message: (m) => {
        if (!welcomed) {
          if (m.type === "welcome" && m.id === helloId && t) {
            welcomed = true;
            this.adopt(t, i, m);
            settle.ok();
          } else if (m.type === "error") {
            settle.fail(new PantheonError(m.code, `hello refused: ${m.message}`));
          }
          return;
        }
        if (t === this.current) this.onMessage(m);
      },
      closed: (info) => {
        if (!welcomed) {
          settle.fail(
            new PantheonError(FATAL_CLOSE[info.code] ?? "connect_failed", `closed before welcome (${info.code} ${info.reason})`, {
              closeCode: info.code
            })
          );
        } else if (t === this.current) {
          this.onTransportClosed(info);
        }
      }
    };
    t = await this.openTransport(this.endpoints[i], sink);
    if (this.state === "closed") {
      t.close(false);
      throw new PantheonError("closed", "the client is closed");
    }
    const hello = { type: "hello", v: 1, id: helloId };
    if (this.opts.token) hello.token = this.opts.token;
    if (this.session) hello.resume = { session: this.session, last_seq: this.lastSeq };
    t.send(hello);
    const ms = this.opts.helloTimeoutMs ?? 1e4;
    const timer = setTimeout(() => settle.fail(new PantheonError("timeout", `no welcome within ${ms} ms`)), ms);
    try {
      await done;
    } catch (e) {
      t.close(false, "handshake failed");
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }
  adopt(t, i, w) {
    const old = this.current;
    const lost = !w.resumed && this.session !== "";
    this.current = t;
    this.index = i;
    this.welcome = w;
    this.peer = w.peer;
    this.session = w.session;
    this.reconnecting = false;
    if (old && old !== t) old.close(false, "moved");
    if (lost) {
      this.lastSeq = 0;
      for (const [id, p] of this.pending) {
        if (!p.sent) continue;
        clearTimeout(p.timer);
        this.pending.delete(id);
        p.reject(new PantheonError("session_lost", `${p.msg.type}: the session could not be resumed`, { request: p.msg.type }));
      }
    }
    this.startHeartbeat(w);
    this.setState({ state: "open", resumed: w.resumed, peer: w.peer, transport: t.kind, server: w.server });
    if (lost && this.opts.rejoin !== false) {
      const rooms = [...this.rooms];
      this.rooms.clear();
      for (const [room, meta] of rooms) {
        this.join(room, meta).then(
          (peers) => this.emit("rejoined", { room, peers }),
          (e) => this.emit("error", e)
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
  onMessage(m) {
    this.lastRecv = now();
    if (typeof m.seq === "number") {
      if (m.seq <= this.lastSeq) return;
      if (m.seq !== this.lastSeq + 1) {
        this.emit("error", new PantheonError("internal", `seq ${m.seq} after ${this.lastSeq}: messages were lost`));
      }
      this.lastSeq = m.seq;
    }
    if (typeof m.id === "number") {
      const p = this.pending.get(m.id);
      if (p && (m.type === p.expect || m.type === "error")) {
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.type === "error") {
          p.reject(new PantheonError(m.code, m.message ?? String(m.code), { request: p.msg.type }));
        } else {
          p.resolve(m);
        }
      }
      return;
    }
    switch (m.type) {
      case "peer_joined":
      case "peer_updated":
        this.emit(m.type, { room: m.room, peer: m.peer, meta: m.meta ?? {} });
        break;
      case "peer_left":
        this.emit("peer_left", { room: m.room, peer: m.peer, reason: m.reason });
        break;
      case "signal":
      case "broadcast":
        this.emit(m.type, { room: m.room, from: m.from, data: m.data });
        break;
      case "reconnect": {
        const notice = { reason: String(m.reason ?? ""), after_ms: Number(m.after_ms ?? 0) };
        this.emit("reconnect", notice);
        this.reconnect(true, notice.after_ms);
        break;
      }
      case "error":
        this.emit("error", new PantheonError(m.code, m.message ?? String(m.code)));
        break;
      default:
        break;
    }
  }
  onTransportClosed(info) {
    this.current = null;
    this.stopHeartbeat();
    if (this.state === "closed") return;
    const fatal = FATAL_CLOSE[info.code];
    if (fatal) {
      this.finish(new PantheonError(fatal, `closed by the server (${info.code} ${info.reason})`, { closeCode: info.code }));
      return;
    }
    if (info.code === 4010) {
      this.finish(new PantheonError("taken_over", "another connection resumed this session", { closeCode: 4010 }));
      return;
    }
    if (this.reconnecting) return;
    if (this.opts.reconnect === false) {
      this.finish(new PantheonError("closed", `connection closed (${info.code} ${info.reason})`, { closeCode: info.code }));
      return;
    }
    this.reconnect(info.code === 1001 || info.code === 1012, 0);
  }
  reconnect(preferOther, delayMs) {
    if (this.reconnecting || this.state === "closed") return;
    this.reconnecting = true;
    this.setState({ state: "resuming" });
    const o = typeof this.opts.reconnect === "object" ? this.opts.reconnect : {};
    const n = this.endpoints.length;
    const first = preferOther && n > 1 ? (this.index + 1) % n : this.index;
    void (async () => {
      await sleep(delayMs + Math.random() * (o.initialDelayMs ?? 250) * (o.jitter ?? 0.5));
      let last;
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
        if (o.maxAttempts !== void 0 && attempt + 1 >= o.maxAttempts) {
          this.finish(new PantheonError("connect_failed", `reconnect failed after ${attempt + 1} rounds: ${last?.message}`));
          return;
        }
        await sleep(backoffDelay(attempt, o));
      }
    })();
  }
  startHeartbeat(w) {
    this.stopHeartbeat();
    this.lastRecv = now();
    const every = this.opts.heartbeatMs ?? Math.min(w.heartbeat_ms || 25e3, 15e3);
    if (!every) return;
    this.heartbeat = setInterval(() => {
      const t = this.current;
      if (!t) return;
      if (now() - this.lastRecv > 2 * every) {
        t.close(false, "heartbeat timeout");
        return;
      }
      t.send({ type: "ping", id: this.nextId++ });
    }, every);
  }
  stopHeartbeat() {
    if (this.heartbeat !== void 0) clearInterval(this.heartbeat);
    this.heartbeat = void 0;
  }
  isClosed() {
    return this.state === "closed";
  }
  setState(ev) {
    this.state = ev.state;
    this.emit("state", ev);
  }
  finish(error) {
    if (this.state === "closed") return;
    this.stopHeartbeat();
    this.reconnecting = false;
    const t = this.current;
    this.current = null;
    t?.close(false, "closed");
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error ?? new PantheonError("closed", "the client was closed", { request: p.msg.type }));
    }
    this.pending.clear();
    this.setState(error ? { state: "closed", error } : { state: "closed" });
  }
};
function isFatal(code) {
  return code === "unauthorized" || code === "unsupported_version" || code === "closed";
}

// src/rtc.ts
var PeerLink = class {
  constructor(client, room, remote, o = {}) {
    this.client = client;
    this.room = room;
    this.remote = remote;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.chain = Promise.resolve();
    this.early = [];
    this.offering = Promise.resolve();
    this.answering = false;
    this.polite = o.polite ?? client.peer > remote;
    this.pc = o.pc ?? new RTCPeerConnection({ iceServers: client.iceServers, ...o.config });
    const pc = this.pc;
    pc.onnegotiationneeded = async () => {
      if (this.answering || pc.signalingState !== "stable") return;
      if (this.polite && !pc.remoteDescription) {
        await new Promise((r) => setTimeout(r, firstOfferDelayMs));
        if (this.answering || pc.remoteDescription || pc.signalingState !== "stable") return;
      }
      try {
        this.makingOffer = true;
        const offer = pc.setLocalDescription();
        this.offering = offer.then(
          () => {
          },
          () => {
          }
        );
        await offer;
        await this.send({ description: describe(pc.localDescription) });
      } catch (e) {
        this.error = e;
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) void this.send({ candidate: candidate.toJSON() }).catch((e) => this.error = e);
    };
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === "failed") pc.restartIce();
    };
    pc.addEventListener("signalingstatechange", () => {
      clearTimeout(this.watchdog);
      if (pc.signalingState !== "stable" || this.polite) return;
      this.watchdog = setTimeout(() => {
        if (pc.signalingState === "stable" && pc.iceConnectionState === "new" && pc.remoteDescription) pc.restartIce();
      }, stallMs);
    });
    this.off = client.on("signal", (s) => {
      if (s.room !== room || s.from !== remote) return;
      this.chain = this.chain.then(() => this.onSignal(s.data)).catch((e) => {
        this.error = e;
      });
    });
  }
  send(data) {
    return this.client.signal(this.room, this.remote, data);
  }
  async onSignal(data) {
    if (!data || typeof data !== "object" || Array.isArray(data)) return;
    const pc = this.pc;
    const { description, candidate } = data;
    if (description) {
      const collision = description.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      this.answering = description.type === "offer";
      try {
        await this.accept(description, collision);
      } finally {
        this.answering = false;
      }
    } else if (candidate) {
      if (!pc.remoteDescription) {
        if (!this.ignoreOffer) this.early.push(candidate);
        return;
      }
      try {
        await pc.addIceCandidate(candidate);
      } catch (e) {
        if (!this.ignoreOffer) throw e;
      }
    }
  }
  async accept(description, collision) {
    const pc = this.pc;
    if (collision) {
      await this.offering;
      if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" });
    }
    await pc.setRemoteDescription(description);
    for (const c of this.early.splice(0)) await pc.addIceCandidate(c).catch(() => {
    });
    if (description.type === "offer") {
      await pc.setLocalDescription();
      await this.send({ description: describe(pc.localDescription) });
    }
  }
  /** Stops listening and closes the RTCPeerConnection. */
  close() {
    clearTimeout(this.watchdog);
    this.off();
    this.pc.close();
  }
};
var stallMs = 3e3;
var firstOfferDelayMs = 500;
function describe(d) {
  return d ? { type: d.type, sdp: d.sdp } : null;
}
function linkPeer(client, room, remote, o) {
  return new PeerLink(client, room, remote, o);
}

// src/index.ts
async function connect(url, options = {}) {
  const client = new Client(options);
  await client.start(Array.isArray(url) ? url : [url]);
  return client;
}
export {
  Client,
  PantheonError,
  PeerLink,
  backoffDelay,
  connect,
  endpointOf,
  endpointOfRegion,
  fetchRegions,
  linkPeer,
  median,
  probeRegions
};

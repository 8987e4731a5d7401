// A minimal in-page Pantheon client (PROTOCOL.md §1–5) over WebSocket or
// WebTransport, plus a WebRTC peer that uses it for signaling. The tests drive
// it through page.evaluate(); everything here is plain browser APIs.
'use strict';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, fail) => {
      timer = setTimeout(() => fail(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function b64ToBuffer(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

// --- transports ---------------------------------------------------------------
// Each transport calls onMessage(obj) per server message and onClose(info)
// once, and offers send(obj) and close(code, reason).

async function openWebSocket(url, t) {
  const ws = new WebSocket(url, 'pantheon.v1');
  await withTimeout(new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onerror = () => fail(new Error(`WebSocket ${url} failed to open`));
  }), 5000, `WebSocket ${url} to open`);
  ws.onerror = null;
  ws.onmessage = (ev) => t.onMessage(JSON.parse(ev.data));
  ws.onclose = (ev) => t.onClose({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
  t.send = (obj) => ws.send(JSON.stringify(obj));
  t.close = (code, reason) => ws.close(code, reason);
  t.raw = ws;
}

async function openWebTransport(url, certHashUrl, t) {
  const res = await fetch(certHashUrl);
  if (!res.ok) throw new Error(`GET ${certHashUrl}: HTTP ${res.status}`);
  const hash = await res.json();
  if (hash.algorithm !== 'sha-256') throw new Error(`cert-hash algorithm ${hash.algorithm}`);
  const wt = new WebTransport(url, {
    serverCertificateHashes: [{ algorithm: 'sha-256', value: b64ToBuffer(hash.value) }],
  });
  // Observe closed right away so that a failed handshake is not an unhandled rejection.
  const closed = wt.closed.then(
    (info) => ({ closeCode: info.closeCode, reason: info.reason }),
    (err) => ({ error: `${err.name}: ${err.message}`, source: err.source, streamErrorCode: err.streamErrorCode }),
  );
  try {
    await withTimeout(wt.ready, 5000, `WebTransport ${url} to be ready`);
  } catch (e) {
    const why = await Promise.race([closed, sleep(200).then(() => null)]);
    throw new Error(`WebTransport ${url} failed: ${e.name}: ${e.message}${why ? ` (closed: ${JSON.stringify(why)})` : ''}`);
  }
  const stream = await withTimeout(wt.createBidirectionalStream(), 5000, 'createBidirectionalStream');
  const writer = stream.writable.getWriter();
  const encoder = new TextEncoder();
  t.send = (obj) => writer.write(encoder.encode(JSON.stringify(obj) + '\n')).catch((e) => {
    t.sendErrors.push(`${e.name}: ${e.message}`);
  });
  t.close = (code, reason) => wt.close({ closeCode: code, reason: reason || '' });
  t.raw = wt;
  // NDJSON reader: a TextDecoder in streaming mode and a line splitter.
  (async () => {
    const reader = stream.readable.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.trim()) t.onMessage(JSON.parse(line));
        }
      }
      t.streamEnd = 'finished';
    } catch (e) {
      t.streamEnd = `${e.name}: ${e.message}`;
    }
  })();
  closed.then((info) => t.onClose(info));
}

// --- a Pantheon session over one transport -----------------------------------

class Conn {
  constructor(kind) {
    this.kind = kind;
    this.log = [];          // every server message, in order
    this.taken = new Set(); // indices of log entries a waiter consumed
    this.waiters = [];
    this.closed = null;
    this.closedWaiters = [];
    this.lastSeq = 0;
    this.seqProblems = [];
    this.sendErrors = [];
    this.nextId = 1;
    this.handlers = [];
  }

  static async open(kind, gw, opts = {}) {
    const c = new Conn(kind);
    const t = {
      onMessage: (m) => c._onMessage(m),
      onClose: (info) => c._onClose(info),
      sendErrors: c.sendErrors,
    };
    if (kind === 'ws') await openWebSocket(gw.ws, t);
    else if (kind === 'wt') await openWebTransport(gw.wt, `${gw.http}/webtransport/cert-hash`, t);
    else throw new Error(`unknown transport ${kind}`);
    c.t = t;
    if (opts.resume) c.lastSeq = opts.resume.last_seq;
    const hello = { type: 'hello', v: 1 };
    if (opts.resume) hello.resume = opts.resume;
    c.welcome = await c.request(hello, 'welcome', 5000);
    c.peer = c.welcome.peer;
    c.session = c.welcome.session;
    if (opts.pagehideCode !== undefined) {
      // What a client that wants its session resumable after a reload does:
      // Chromium itself closes a WebTransport session of an unloading page
      // with code 0, a goodbye.
      addEventListener('pagehide', () => c.close(opts.pagehideCode, 'page unload'));
    }
    return c;
  }

  _onMessage(m) {
    if (m.type !== 'welcome') {
      if (m.seq !== this.lastSeq + 1) {
        this.seqProblems.push(`got seq ${m.seq} after ${this.lastSeq} (${m.type})`);
      }
      if (typeof m.seq === 'number') this.lastSeq = m.seq;
    }
    m.at = performance.now();
    m.wall = Date.now(); // wall clock, comparable across pages
    const i = this.log.push(m) - 1;
    for (const h of this.handlers) h(m);
    for (const w of [...this.waiters]) {
      if (!this.taken.has(i) && w.pred(m)) {
        this.taken.add(i);
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.ok(m);
      }
    }
  }

  _onClose(info) {
    this.closed = { ...info, at: performance.now() };
    for (const w of this.closedWaiters) w(this.closed);
  }

  send(obj) { this.t.send(obj); }

  /** Waits for the first not yet consumed server message matching pred. */
  waitFor(pred, ms, what) {
    for (let i = 0; i < this.log.length; i++) {
      if (!this.taken.has(i) && pred(this.log[i])) {
        this.taken.add(i);
        return Promise.resolve(this.log[i]);
      }
    }
    let w;
    const p = new Promise((ok) => { w = { pred, ok }; this.waiters.push(w); });
    return withTimeout(p, ms, `${what} on the ${this.kind} connection of ${this.peer || 'a new peer'}`)
      .catch((e) => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        const recent = this.log.slice(-8).map((m) => JSON.stringify(m)).join('\n  ');
        throw new Error(`${e.message}; closed: ${JSON.stringify(this.closed)}; last messages:\n  ${recent}`);
      });
  }

  /** Sends a request with a fresh id and waits for the reply of `type` echoing it. */
  async request(obj, type, ms = 5000) {
    const id = this.nextId++;
    this.send({ ...obj, id });
    const reply = await this.waitFor((m) => m.id === id && (m.type === type || m.type === 'error'), ms,
      `${type} for ${obj.type} #${id}`);
    if (reply.type === 'error') {
      throw new Error(`${obj.type} #${id} got error ${reply.code}: ${reply.message}`);
    }
    return reply;
  }

  join(room, meta) { return this.request({ type: 'join', room, meta }, 'joined'); }
  signal(room, to, data) { return this.request({ type: 'signal', room, to, data }, 'ack'); }

  waitClosed(ms) {
    if (this.closed) return Promise.resolve(this.closed);
    return withTimeout(new Promise((ok) => this.closedWaiters.push(ok)), ms, `the ${this.kind} transport to close`);
  }

  /** Closes the transport; returns the wall-clock time of the close. */
  close(code, reason) {
    const at = Date.now();
    this.t.close(code, reason);
    return at;
  }
}

// --- WebRTC over Pantheon signaling -------------------------------------------
// Only loopback host candidates are relayed: both pages live on this machine,
// and nothing is to go to any other address.

function isLoopback(c) {
  return c.address === '127.0.0.1';
}

class RtcPeer {
  constructor(conn, room, remote, { polite }) {
    this.conn = conn;
    this.room = room;
    this.remote = remote;
    this.polite = polite;
    this.stats = { sent: { sdp: 0, candidate: 0 }, received: { sdp: 0, candidate: 0 }, dropped: [] };
    this.messages = [];
    this.receivedCandidates = [];
    this.pc = new RTCPeerConnection({ iceServers: [] });
    this.pendingRemote = [];
    this.pendingLocal = [];
    this.localReady = false;
    this.states = [];
    this.pc.onconnectionstatechange = () => this.states.push(this.pc.connectionState);
    this.pc.onicecandidate = (ev) => {
      if (!ev.candidate || !ev.candidate.candidate) return;
      if (!isLoopback(ev.candidate)) {
        this.stats.dropped.push(ev.candidate.candidate);
        return;
      }
      if (this.localReady) this._sendCandidate(ev.candidate);
      else this.pendingLocal.push(ev.candidate);
    };
    this.pc.ondatachannel = (ev) => this._channel(ev.channel);
    this.tracks = [];
    this.pc.ontrack = (ev) => this.tracks.push(ev.track);
    // Signals are handled one at a time, in the order they arrived.
    this.chain = Promise.resolve();
    conn.handlers.push((m) => {
      if (m.type !== 'signal' || m.room !== room || m.from !== remote) return;
      this.chain = this.chain.then(() => this._onSignal(m.data)).catch((e) => {
        this.error = `${e.name}: ${e.message}`;
      });
    });
  }

  _sendCandidate(c) {
    this.stats.sent.candidate++;
    this.conn.signal(this.room, this.remote, { candidate: c.toJSON() }).catch((e) => { this.error = e.message; });
  }

  _flushLocal() {
    this.localReady = true;
    for (const c of this.pendingLocal.splice(0)) this._sendCandidate(c);
  }

  _channel(dc) {
    this.dc = dc;
    dc.onmessage = (ev) => this.messages.push(ev.data);
  }

  async _onSignal(data) {
    if (data.sdp) {
      this.stats.received.sdp++;
      await this.pc.setRemoteDescription(data.sdp);
      if (data.sdp.type === 'offer') {
        const answer = await this.pc.createAnswer();
        await this.pc.setLocalDescription(answer);
        this.stats.sent.sdp++;
        await this.conn.signal(this.room, this.remote, { sdp: { type: answer.type, sdp: answer.sdp } });
        this._flushLocal();
      }
      for (const c of this.pendingRemote.splice(0)) await this.pc.addIceCandidate(c);
    } else if (data.candidate) {
      this.stats.received.candidate++;
      this.receivedCandidates.push(data.candidate.candidate);
      if (this.pc.remoteDescription) await this.pc.addIceCandidate(data.candidate);
      else this.pendingRemote.push(data.candidate);
    }
  }

  /** The calling side: a data channel (and optional media), then the offer. */
  async call({ video = false } = {}) {
    this._channel(this.pc.createDataChannel('chat'));
    if (video) {
      this.localStream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
      for (const track of this.localStream.getTracks()) this.pc.addTrack(track, this.localStream);
    }
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this.stats.sent.sdp++;
    await this.conn.signal(this.room, this.remote, { sdp: { type: offer.type, sdp: offer.sdp } });
    this._flushLocal();
  }

  async connected(ms) {
    const deadline = performance.now() + ms;
    while (this.pc.connectionState !== 'connected') {
      if (this.error) throw new Error(`signaling failed: ${this.error}`);
      if (this.pc.connectionState === 'failed' || performance.now() > deadline) {
        throw new Error(`RTCPeerConnection is ${this.pc.connectionState} (ice ${this.pc.iceConnectionState}, ` +
          `states ${JSON.stringify(this.states)}) after ${ms} ms; signaling ${JSON.stringify(this.stats)}`);
      }
      await sleep(20);
    }
    return this.summary();
  }

  /**
   * Waits until at least one ICE candidate came from the other side. (The
   * connection may already be up through a peer-reflexive candidate learned
   * from the other side's checks before its trickled candidate arrived.)
   */
  async candidates(ms) {
    const deadline = performance.now() + ms;
    while (this.receivedCandidates.length === 0) {
      if (this.error) throw new Error(`signaling failed: ${this.error}`);
      if (performance.now() > deadline) throw new Error(`no ICE candidate received through the gateway after ${ms} ms; signaling ${JSON.stringify(this.stats)}`);
      await sleep(20);
    }
    return this.receivedCandidates;
  }

  async channelOpen(ms) {
    const deadline = performance.now() + ms;
    while (!this.dc || this.dc.readyState !== 'open') {
      if (performance.now() > deadline) throw new Error(`data channel not open after ${ms} ms (${this.dc ? this.dc.readyState : 'none'})`);
      await sleep(20);
    }
  }

  async message(ms) {
    const deadline = performance.now() + ms;
    while (this.messages.length === 0) {
      if (performance.now() > deadline) throw new Error(`no data channel message after ${ms} ms`);
      await sleep(20);
    }
    return this.messages[0];
  }

  /** Waits until frames of a remote video track have been decoded. */
  async videoFrames(ms) {
    const deadline = performance.now() + ms;
    let last = null;
    for (;;) {
      const report = await this.pc.getStats();
      for (const s of report.values()) {
        if (s.type === 'inbound-rtp' && s.kind === 'video') last = s;
      }
      if (last && last.framesDecoded > 0) {
        return { framesDecoded: last.framesDecoded, width: last.frameWidth, height: last.frameHeight, tracks: this.tracks.length };
      }
      if (performance.now() > deadline) {
        throw new Error(`no decoded video frame after ${ms} ms (tracks ${this.tracks.length}, inbound-rtp ${JSON.stringify(last)})`);
      }
      await sleep(50);
    }
  }

  async pair() {
    const report = await this.pc.getStats();
    let pair = null;
    for (const s of report.values()) {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    }
    if (!pair) return null;
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    return { local: `${local.address}:${local.port}`, remote: `${remote.address}:${remote.port}` };
  }

  summary() {
    return { state: this.pc.connectionState, signaling: this.stats };
  }

  close() {
    this.pc.close();
    if (this.localStream) for (const t of this.localStream.getTracks()) t.stop();
  }
}

/** Ends every session still open with a goodbye and waits for the closes. */
async function closeAll(ms = 2000) {
  const open = Object.values(window.pantheon.conns).filter((c) => !c.closed);
  for (const c of open) c.close(c.kind === 'ws' ? 1000 : 0, 'page done');
  await Promise.allSettled(open.map((c) => c.waitClosed(ms)));
}

window.pantheon = { Conn, RtcPeer, sleep, closeAll, conns: {}, peers: {} };

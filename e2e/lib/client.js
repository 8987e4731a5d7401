// Node-side handles on the in-page client (page/client.js): each call runs in
// the page through page.evaluate, so the browser does all protocol work.

/** What a page needs to reach the gateway. */
export function endpoints(gw) {
  return { ws: gw.ws, wt: gw.wt, http: gw.http };
}

/** Opens a session (`kind`: 'ws' | 'wt') in the page, kept as conns[key]. */
export function open(p, gw, kind, { key = p.key || 'main', resume, pagehideCode } = {}) {
  return p.page.evaluate(async ({ gw, kind, key, resume, pagehideCode }) => {
    const c = await pantheon.Conn.open(kind, gw, { resume, pagehideCode });
    pantheon.conns[key] = c;
    return { peer: c.peer, session: c.session, resumed: c.welcome.resumed, lastSeq: c.lastSeq };
  }, { gw: endpoints(gw), kind, key, resume, pagehideCode });
}

export function join(p, room, { key = p.key || 'main', meta } = {}) {
  return p.page.evaluate(({ room, key, meta }) => pantheon.conns[key].join(room, meta), { room, key, meta });
}

export function signal(p, room, to, data, { key = p.key || 'main' } = {}) {
  return p.page.evaluate(({ room, to, data, key }) => pantheon.conns[key].signal(room, to, data), { room, to, data, key });
}

/** Waits for a server message whose fields equal every field of `match`. */
export function waitMsg(p, match, ms, { key = p.key || 'main' } = {}) {
  return p.page.evaluate(({ match, ms, key }) => {
    const pred = (m) => Object.entries(match).every(([k, v]) => JSON.stringify(m[k]) === JSON.stringify(v));
    return pantheon.conns[key].waitFor(pred, ms, JSON.stringify(match));
  }, { match, ms, key });
}

/** How many messages the session has received so far (for `received(..., {since})`). */
export function mark(p, { key = p.key || 'main' } = {}) {
  return p.page.evaluate(({ key }) => pantheon.conns[key].log.length, { key });
}

/** Every message received (since the `since` mark) that matches `match`, consumed or not. */
export function received(p, match, { key = p.key || 'main', since = 0 } = {}) {
  return p.page.evaluate(({ match, key, since }) => {
    const pred = (m) => Object.entries(match).every(([k, v]) => JSON.stringify(m[k]) === JSON.stringify(v));
    return pantheon.conns[key].log.slice(since).filter(pred);
  }, { match, key, since });
}

/**
 * Closes the session's transport with `code` (WebSocket close code or
 * WebTransport closeCode). Returns the page's wall-clock time of the close.
 */
export function closeConn(p, code, reason = '', { key = p.key || 'main' } = {}) {
  return p.page.evaluate(({ code, reason, key }) => pantheon.conns[key].close(code, reason), { code, reason, key });
}

/** A `ping` request answered by `pong`: the session is up. */
export function ping(p, { key = p.key || 'main', ms = 3000 } = {}) {
  return p.page.evaluate(({ key, ms }) => pantheon.conns[key].request({ type: 'ping' }, 'pong', ms), { key, ms });
}

/** Connection state: seq problems, close info, last seq. */
export function state(p, { key = p.key || 'main' } = {}) {
  return p.page.evaluate(({ key }) => {
    const c = pantheon.conns[key];
    return { lastSeq: c.lastSeq, seqProblems: c.seqProblems, closed: c.closed, sendErrors: c.sendErrors, streamEnd: c.t.streamEnd };
  }, { key });
}

let rooms = 0;
/** A room name unique to this process and call. */
export function freshRoom(label) {
  return `e2e.${label}.${process.pid}.${++rooms}`.replace(/[^A-Za-z0-9._:~-]/g, '-');
}

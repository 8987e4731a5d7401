// Where one gateway (or one region) is reached, over each transport.

import type { RegionEntry } from './messages.js';

/** The URLs of one gateway: HTTP origin, WebSocket and WebTransport endpoints. */
export interface Endpoint {
  /** HTTP(S) origin for `/health`, `/regions`, `/webtransport/cert-hash`. */
  http: string;
  /** `ws[s]://HOST:PORT/ws` */
  ws: string;
  /** `https://HOST:WT_PORT/wt`; absent when this endpoint offers no WebTransport. */
  wt?: string;
  /** The region's name, when the endpoint came from a region list. */
  region?: string;
}

/**
 * The endpoint of a gateway given by its base URL: `http://host:port` (or
 * `https://`, `ws://`, `wss://`; a path is ignored). WebTransport is on the
 * same host, on `wtPort` when given, else on the same port number (the
 * gateway's default: `WT_PORT` = `PORT`).
 */
export function endpointOf(base: string, wtPort?: number): Endpoint {
  const u = new URL(base);
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) {
    throw new TypeError(`gateway URL ${base}: expected http(s):// or ws(s)://`);
  }
  const host = u.host; // includes the port when not the default
  const http = `${secure ? 'https' : 'http'}://${host}`;
  const ws = `${secure ? 'wss' : 'ws'}://${host}/ws`;
  const port = wtPort ?? (u.port ? Number(u.port) : secure ? 443 : 80);
  const wt = `https://${u.hostname.includes(':') ? `[${u.hostname.replace(/^\[|\]$/g, '')}]` : u.hostname}:${port}/wt`;
  return { http, ws, wt };
}

/** The endpoint of a region from `/regions`, or null when it has no usable URL. */
export function endpointOfRegion(r: RegionEntry): Endpoint | null {
  if (!r.ws_url && !r.wt_url) return null;
  let http: string;
  if (r.ws_url) {
    const u = new URL(r.ws_url);
    http = `${u.protocol === 'wss:' ? 'https' : 'http'}://${u.host}`;
  } else {
    http = new URL(r.wt_url as string).origin;
  }
  const e: Endpoint = { http, ws: r.ws_url ?? '', region: r.region };
  if (r.wt_url) e.wt = r.wt_url;
  return e;
}

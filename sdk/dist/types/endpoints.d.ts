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
export declare function endpointOf(base: string, wtPort?: number): Endpoint;
/** The endpoint of a region from `/regions`, or null when it has no usable URL. */
export declare function endpointOfRegion(r: RegionEntry): Endpoint | null;

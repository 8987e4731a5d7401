/**
 * Pantheon SDK: a client for the Pantheon signaling gateway, in browsers and
 * Node 20+. WebTransport first, WebSocket fallback, sessions that survive
 * dropped connections and instance restarts, typed requests and events, and
 * an optional perfect-negotiation helper for RTCPeerConnection.
 *
 * ```js
 * import { connect } from './pantheon.js';
 * const client = await connect('http://localhost:3000', { certificateHash: 'fetch' });
 * client.on('signal', (s) => console.log(s.from, s.data));
 * const peers = await client.join('demo');
 * ```
 */

import { Client, type ConnectOptions } from './client.js';

export { Client } from './client.js';
export type { Attempt, ClientEvents, ConnectOptions, State, StateEvent } from './client.js';
export { PantheonError } from './errors.js';
export type { ErrorCode } from './errors.js';
export { backoffDelay } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { endpointOf, endpointOfRegion } from './endpoints.js';
export type { Endpoint } from './endpoints.js';
export { fetchRegions, probeRegions, median } from './regions.js';
export type { ProbeOptions, RegionList, RegionProbe } from './regions.js';
export { PeerLink, linkPeer } from './rtc.js';
export type { PeerLinkOptions } from './rtc.js';
export type { TransportKind, WebSocketConstructor, WebTransportConstructor } from './transport.js';
export type * from './messages.js';

/**
 * Connects to the gateway at `url` (`http://host:port`; WebSocket at `/ws`,
 * WebTransport at `https://host:port/wt`), or to the first of several that
 * answers; later reconnects try the others too. Resolves once the session is
 * open.
 */
export async function connect(url: string | string[], options: ConnectOptions = {}): Promise<Client> {
  const client = new Client(options);
  await client.start(Array.isArray(url) ? url : [url]);
  return client;
}

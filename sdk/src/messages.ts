// The wire messages of protocol v1 (docs/protocol.md), as the SDK sees them.

/** Any JSON value (what `signal` and `broadcast` carry). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A peer's metadata: a JSON object of at most 1 024 bytes (compact). */
export type Meta = { [key: string]: Json };

/** A member of a room, as `joined` and `peers` list them. */
export interface PeerInfo {
  peer: string;
  meta: Meta;
}

/** A region of the deployment, as `GET /regions` and `welcome.regions` list it. */
export interface RegionEntry {
  region: string;
  /** WebSocket URL of the region, e.g. `wss://us.example.org/ws`. */
  ws_url?: string;
  /** WebTransport URL of the region, e.g. `https://us.example.org/wt`. */
  wt_url?: string;
  instances?: number;
}

/** An ICE server entry as `welcome.ice_servers` carries it (RTCIceServer). */
export interface IceServer {
  urls: string | string[];
  username?: string;
  credential?: string;
}

export interface Limits {
  max_message_bytes: number;
  max_rooms: number;
  max_room_peers: number;
  rate_per_sec: number;
  rate_burst: number;
}

export interface Welcome {
  type: 'welcome';
  v: number;
  id?: number;
  peer: string;
  session: string;
  resumed: boolean;
  server: string;
  region: string;
  heartbeat_ms: number;
  limits: Limits;
  ice_servers?: IceServer[];
  regions?: RegionEntry[];
}

export interface PeerJoinedEvent {
  room: string;
  peer: string;
  meta: Meta;
}

export interface PeerLeftEvent {
  room: string;
  peer: string;
  reason: 'left' | 'disconnected';
}

export interface PeerUpdatedEvent {
  room: string;
  peer: string;
  meta: Meta;
}

export interface SignalEvent {
  room: string;
  from: string;
  data: Json;
}

export interface BroadcastEvent {
  room: string;
  from: string;
  data: Json;
}

export interface ReconnectNotice {
  reason: string;
  after_ms: number;
}

/** A server message after `welcome`: every one carries `seq`. */
export interface ServerMessage {
  type: string;
  seq?: number;
  id?: number;
  [field: string]: unknown;
}

import { type BackoffOptions } from './backoff.js';
import { type Endpoint } from './endpoints.js';
import { PantheonError } from './errors.js';
import { Emitter } from './events.js';
import type { BroadcastEvent, IceServer, Json, Meta, PeerInfo, PeerJoinedEvent, PeerLeftEvent, PeerUpdatedEvent, ReconnectNotice, SignalEvent, Welcome } from './messages.js';
import { type ProbeOptions, type RegionProbe } from './regions.js';
import { type TransportKind, type WebSocketConstructor, type WebTransportConstructor } from './transport.js';
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
    reconnect?: boolean | (BackoffOptions & {
        maxAttempts?: number;
    });
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
    rejoined: {
        room: string;
        peers: PeerInfo[];
    };
    /** An error not tied to a request (e.g. `rate_limited` for a message without id). */
    error: PantheonError;
}
export declare class Client extends Emitter<ClientEvents> {
    /** The current state (see {@link State}). */
    state: State;
    /** This session's peer id (changes only when a resume fails). */
    peer: string;
    /** The resume token. */
    session: string;
    /** The last `seq` processed. */
    lastSeq: number;
    /** The latest `welcome`. */
    welcome: Welcome | undefined;
    /** Endpoints in the order they are tried (nearest region first with `regions: 'auto'`). */
    endpoints: Endpoint[];
    /** Region probes, with `regions: 'auto'`. */
    regionProbes: RegionProbe[] | undefined;
    /** The last transport attempts (diagnostics). */
    readonly attempts: Attempt[];
    private readonly opts;
    private current;
    private index;
    private nextId;
    private readonly pending;
    private readonly rooms;
    private reconnecting;
    private readonly wtBroken;
    private heartbeat;
    private lastRecv;
    /** Use {@link connect}. */
    constructor(options?: ConnectOptions);
    /** The transport of the current connection. */
    get transport(): TransportKind | undefined;
    /** The gateway instance (`welcome.server`) of the current session. */
    get server(): string | undefined;
    /** The endpoint of the current (or last) connection. */
    get endpoint(): Endpoint | undefined;
    /** ICE servers for RTCPeerConnection, from `welcome`. */
    get iceServers(): IceServer[];
    /** The rooms this session is in, with the meta it joined or updated with. */
    get joinedRooms(): string[];
    /** Joins `room`; resolves with the other members. */
    join(room: string, meta?: Meta): Promise<PeerInfo[]>;
    leave(room: string): Promise<void>;
    /** Sends `data` to peer `to` in `room`; resolves when the gateway accepted it. */
    signal(room: string, to: string, data: Json): Promise<void>;
    broadcast(room: string, data: Json): Promise<void>;
    update(room: string, meta: Meta): Promise<void>;
    /** The other members of `room`, now. */
    peers(room: string): Promise<PeerInfo[]>;
    /** A `ping`; resolves with the round-trip time in ms (the signaling latency). */
    ping(): Promise<number>;
    /** Ends the session with a goodbye (others see `peer_left` `left`). */
    close(): void;
    private request;
    /** @internal Resolves the endpoints and opens the first session. */
    start(urls: string[]): Promise<void>;
    private record;
    private certHashes;
    private openTransport;
    /** Opens a connection to endpoint `i`, says hello (resuming when there is a session) and adopts it. */
    private handshake;
    private adopt;
    private onMessage;
    private onTransportClosed;
    private reconnect;
    private startHeartbeat;
    private stopHeartbeat;
    private isClosed;
    private setState;
    private finish;
}

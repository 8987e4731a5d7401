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
export declare const ABNORMAL = 1006;
/** Opens a WebSocket with subprotocol `pantheon.v1`. */
export declare function openWebSocket(url: string, Ctor: WebSocketConstructor, ms: number, sink: Sink): Promise<Transport>;
/**
 * Opens a WebTransport session and its one bidirectional stream carrying
 * newline-delimited JSON.
 */
export declare function openWebTransport(url: string, Ctor: WebTransportConstructor, ms: number, hashes: WebTransportHash[] | undefined, sink: Sink): Promise<Transport>;
/** base64 → bytes, for a certificate hash fetched as JSON. */
export declare function fromBase64(b64: string): Uint8Array<ArrayBuffer>;

import type { Client } from './client.js';
export interface PeerLinkOptions {
    /**
     * Whether this side is the polite one. Default: the side with the greater
     * peer id, so two SDK clients always disagree.
     */
    polite?: boolean;
    /** RTCPeerConnection configuration; `iceServers` default to `welcome.ice_servers`. */
    config?: RTCConfiguration;
    /** An existing RTCPeerConnection to wire (instead of a new one). */
    pc?: RTCPeerConnection;
}
/** An RTCPeerConnection to one remote peer of one room, negotiated through the client. */
export declare class PeerLink {
    readonly client: Client;
    readonly room: string;
    readonly remote: string;
    readonly pc: RTCPeerConnection;
    readonly polite: boolean;
    /** The last negotiation error (negotiation goes on after one). */
    error: Error | undefined;
    private makingOffer;
    private ignoreOffer;
    private chain;
    private early;
    private offering;
    private answering;
    private watchdog;
    private readonly off;
    constructor(client: Client, room: string, remote: string, o?: PeerLinkOptions);
    private send;
    private onSignal;
    private accept;
    /** Stops listening and closes the RTCPeerConnection. */
    close(): void;
}
/** Wires a new (or given) RTCPeerConnection to `remote` in `room`. */
export declare function linkPeer(client: Client, room: string, remote: string, o?: PeerLinkOptions): PeerLink;

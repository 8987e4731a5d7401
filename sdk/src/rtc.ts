// Wires an RTCPeerConnection to Pantheon signaling with the "perfect
// negotiation" pattern (W3C WebRTC 1.0 §10.7): both sides may renegotiate at
// any time; on an offer collision the impolite side wins and the polite side
// rolls back.

import type { Client } from './client.js';
import type { Json } from './messages.js';

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
export class PeerLink {
  readonly pc: RTCPeerConnection;
  readonly polite: boolean;
  /** The last negotiation error (negotiation goes on after one). */
  error: Error | undefined;
  private makingOffer = false;
  private ignoreOffer = false;
  private chain: Promise<void> = Promise.resolve();
  private readonly off: () => void;

  constructor(
    readonly client: Client,
    readonly room: string,
    readonly remote: string,
    o: PeerLinkOptions = {},
  ) {
    this.polite = o.polite ?? client.peer > remote;
    this.pc = o.pc ?? new RTCPeerConnection({ iceServers: client.iceServers as RTCIceServer[], ...o.config });
    const pc = this.pc;
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        await this.send({ description: describe(pc.localDescription) });
      } catch (e) {
        this.error = e as Error;
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) void this.send({ candidate: candidate.toJSON() as Json }).catch((e) => (this.error = e));
    };
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === 'failed') pc.restartIce();
    };
    this.off = client.on('signal', (s) => {
      if (s.room !== room || s.from !== remote) return;
      // One at a time, in arrival order.
      this.chain = this.chain.then(() => this.onSignal(s.data)).catch((e) => {
        this.error = e as Error;
      });
    });
  }

  private send(data: Json): Promise<void> {
    return this.client.signal(this.room, this.remote, data);
  }

  private async onSignal(data: Json): Promise<void> {
    if (!data || typeof data !== 'object' || Array.isArray(data)) return;
    const pc = this.pc;
    const { description, candidate } = data as { description?: RTCSessionDescriptionInit; candidate?: RTCIceCandidateInit };
    if (description) {
      const collision = description.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      await pc.setRemoteDescription(description); // rolls back a local offer when polite
      if (description.type === 'offer') {
        await pc.setLocalDescription();
        await this.send({ description: describe(pc.localDescription) });
      }
    } else if (candidate) {
      try {
        await pc.addIceCandidate(candidate);
      } catch (e) {
        if (!this.ignoreOffer) throw e;
      }
    }
  }

  /** Stops listening and closes the RTCPeerConnection. */
  close(): void {
    this.off();
    this.pc.close();
  }
}

function describe(d: RTCSessionDescription | null): Json {
  return d ? { type: d.type, sdp: d.sdp } : null;
}

/** Wires a new (or given) RTCPeerConnection to `remote` in `room`. */
export function linkPeer(client: Client, room: string, remote: string, o?: PeerLinkOptions): PeerLink {
  return new PeerLink(client, room, remote, o);
}

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
  private early: RTCIceCandidateInit[] = [];
  private offering: Promise<void> = Promise.resolve();
  private answering = false;
  private watchdog: ReturnType<typeof setTimeout> | undefined;
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
      // Chromium fires it again right after a rollback, while the remote
      // offer is being answered; the answer settles what is needed, and the
      // event comes again afterwards if anything is left.
      if (this.answering || pc.signalingState !== 'stable') return;
      if (this.polite && !pc.remoteDescription) {
        // The first negotiation: give the impolite side's offer time to
        // arrive instead of colliding with it. Chromium gathers no ICE
        // candidates after rolling back an initial offer, so a first-offer
        // collision would leave the connection at "new" for good.
        await new Promise((r) => setTimeout(r, firstOfferDelayMs));
        if (this.answering || pc.remoteDescription || pc.signalingState !== 'stable') return;
      }
      try {
        this.makingOffer = true;
        const offer = pc.setLocalDescription();
        this.offering = offer.then(
          () => {},
          () => {},
        );
        await offer;
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
    // Negotiated but ICE never started (seen in Chromium after an offer
    // collision): the impolite side restarts ICE, which renegotiates.
    pc.addEventListener('signalingstatechange', () => {
      clearTimeout(this.watchdog);
      if (pc.signalingState !== 'stable' || this.polite) return;
      this.watchdog = setTimeout(() => {
        if (pc.signalingState === 'stable' && pc.iceConnectionState === 'new' && pc.remoteDescription) pc.restartIce();
      }, stallMs);
    });
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
      this.answering = description.type === 'offer';
      try {
        await this.accept(description, collision);
      } finally {
        this.answering = false;
      }
    } else if (candidate) {
      if (!pc.remoteDescription) {
        if (!this.ignoreOffer) this.early.push(candidate);
        return;
      }
      try {
        await pc.addIceCandidate(candidate);
      } catch (e) {
        if (!this.ignoreOffer) throw e;
      }
    }
  }

  private async accept(description: RTCSessionDescriptionInit, collision: boolean): Promise<void> {
    const pc = this.pc;
    if (collision) {
      // Polite: give up our offer, once it is set, with an explicit
      // rollback. After the implicit rollback of setRemoteDescription (or
      // one racing our own setLocalDescription) Chromium gathers no ICE
      // candidates for the answer.
      await this.offering;
      if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
    }
    await pc.setRemoteDescription(description);
    // Candidates that came before the description they belong to.
    for (const c of this.early.splice(0)) await pc.addIceCandidate(c).catch(() => {});
    if (description.type === 'offer') {
      await pc.setLocalDescription();
      await this.send({ description: describe(pc.localDescription) });
    }
  }

  /** Stops listening and closes the RTCPeerConnection. */
  close(): void {
    clearTimeout(this.watchdog);
    this.off();
    this.pc.close();
  }
}

const stallMs = 3000;
const firstOfferDelayMs = 500;

function describe(d: RTCSessionDescription | null): Json {
  return d ? { type: d.type, sdp: d.sdp } : null;
}

/** Wires a new (or given) RTCPeerConnection to `remote` in `room`. */
export function linkPeer(client: Client, room: string, remote: string, o?: PeerLinkOptions): PeerLink {
  return new PeerLink(client, room, remote, o);
}

/**
 * Error codes: the protocol's (docs/protocol.md, "Limits and errors") and the
 * SDK's own for what happens on this side of the wire.
 */
export type ErrorCode = 'bad_request' | 'too_large' | 'rate_limited' | 'unauthorized' | 'not_in_room' | 'peer_not_found' | 'room_full' | 'too_many_rooms' | 'unsupported_version' | 'internal'
/** No reply within `requestTimeoutMs`. */
 | 'timeout'
/** The client was closed (by `close()`, or for good by the server). */
 | 'closed'
/** The session could not be resumed; requests in flight were not answered. */
 | 'session_lost'
/** Another connection resumed this session (close code 4010). */
 | 'taken_over'
/** No transport could be opened to any of the URLs. */
 | 'connect_failed'
/** The requested transport does not exist in this environment. */
 | 'unsupported';
/** A failed request or connection, carrying the protocol (or SDK) code. */
export declare class PantheonError extends Error {
    readonly name = "PantheonError";
    /** The protocol error code, or one of the SDK's own codes. */
    readonly code: ErrorCode;
    /** The request type that failed (`join`, `signal`, ...), when one did. */
    readonly request: string | undefined;
    /** The close code that ended the connection, when that is the cause. */
    readonly closeCode: number | undefined;
    constructor(code: ErrorCode, message: string, extra?: {
        request?: string;
        closeCode?: number;
    });
}

/** Reconnect pacing: exponential backoff with jitter. */
export interface BackoffOptions {
    /** Delay before the first retry, in ms (default 250). */
    initialDelayMs?: number;
    /** Longest delay, in ms (default 10 000). */
    maxDelayMs?: number;
    /** Growth per attempt (default 2). */
    factor?: number;
    /**
     * Fraction of each delay that is random (default 0.5): the delay is drawn
     * from [d·(1−jitter), d], so clients cut off together do not come back
     * together.
     */
    jitter?: number;
}
/** The delay before retry number `attempt` (0-based); `random` in [0, 1). */
export declare function backoffDelay(attempt: number, o?: BackoffOptions, random?: () => number): number;

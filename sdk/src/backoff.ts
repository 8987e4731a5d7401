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
export function backoffDelay(attempt: number, o: BackoffOptions = {}, random: () => number = Math.random): number {
  const initial = o.initialDelayMs ?? 250;
  const max = o.maxDelayMs ?? 10_000;
  const factor = o.factor ?? 2;
  const jitter = Math.min(Math.max(o.jitter ?? 0.5, 0), 1);
  const d = Math.min(max, initial * Math.pow(factor, Math.min(attempt, 64)));
  return Math.round(d * (1 - jitter * random()));
}

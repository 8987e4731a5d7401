// Nearest-region selection: GET /regions, probe each region's /health a few
// times, order by median round-trip time (unreachable regions last).

import { endpointOfRegion, type Endpoint } from './endpoints.js';
import type { RegionEntry } from './messages.js';

/** `GET /regions`: this instance's region and every region with its URLs. */
export interface RegionList {
  self: string;
  regions: RegionEntry[];
}

export interface RegionProbe {
  region: string;
  endpoint: Endpoint;
  /** Round-trip times of the probes that answered, in ms. */
  rtts: number[];
  /** Median of `rtts`; `Infinity` when no probe answered. */
  median: number;
}

export interface ProbeOptions {
  /** Probes per region (default 3). */
  probes?: number;
  /** Longest wait for one probe, in ms (default 2 000). */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

/** Fetches `<base>/regions`. */
export async function fetchRegions(base: string, f: typeof fetch = fetch, timeoutMs = 5000): Promise<RegionList> {
  const url = new URL('/regions', base).toString();
  const r = await f(url, { cache: 'no-store', signal: AbortSignal.timeout(timeoutMs) });
  if (!r.ok) throw new Error(`GET ${url}: HTTP ${r.status}`);
  const body = (await r.json()) as RegionList;
  if (!body || !Array.isArray(body.regions)) throw new Error(`GET ${url}: no "regions" array`);
  return body;
}

export function median(xs: number[]): number {
  if (xs.length === 0) return Infinity;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

async function probeOne(e: Endpoint, o: Required<Pick<ProbeOptions, 'probes' | 'timeoutMs'>>, f: typeof fetch): Promise<number[]> {
  const url = `${e.http}/health`;
  const rtts: number[] = [];
  for (let i = 0; i < o.probes; i++) {
    const t0 = performance.now();
    try {
      const r = await f(url, { cache: 'no-store', signal: AbortSignal.timeout(o.timeoutMs) });
      await r.arrayBuffer();
      if (r.ok) rtts.push(performance.now() - t0);
    } catch {
      // Unreachable or too slow: one lost probe. A region none of whose
      // probes answered sorts last.
    }
  }
  return rtts;
}

/**
 * Probes every region with a URL (in parallel; a region's probes one after
 * another) and returns them nearest first: by median RTT, unreachable last,
 * ties in list order.
 */
export async function probeRegions(regions: RegionEntry[], o: ProbeOptions = {}): Promise<RegionProbe[]> {
  const f = o.fetch ?? fetch;
  const opts = { probes: Math.max(1, o.probes ?? 3), timeoutMs: o.timeoutMs ?? 2000 };
  const candidates = regions
    .map((r) => ({ r, e: endpointOfRegion(r) }))
    .filter((c): c is { r: RegionEntry; e: Endpoint } => c.e !== null);
  const probed = await Promise.all(
    candidates.map(async ({ r, e }) => {
      const rtts = await probeOne(e, opts, f);
      return { region: r.region, endpoint: e, rtts, median: median(rtts) };
    }),
  );
  return probed
    .map((p, i) => ({ p, i }))
    .sort((a, b) => (a.p.median === b.p.median ? a.i - b.i : a.p.median < b.p.median ? -1 : 1))
    .map(({ p }) => p);
}

import { type Endpoint } from './endpoints.js';
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
export declare function fetchRegions(base: string, f?: typeof fetch, timeoutMs?: number): Promise<RegionList>;
export declare function median(xs: number[]): number;
/**
 * Probes every region with a URL (in parallel; a region's probes one after
 * another) and returns them nearest first: by median RTT, unreachable last,
 * ties in list order.
 */
export declare function probeRegions(regions: RegionEntry[], o?: ProbeOptions): Promise<RegionProbe[]>;

#!/usr/bin/env python3
"""Median and range per stack and pacing of a run.sh results file, and p99
ratios against tcp and tls (median of the per-round ratios)."""
import json
import statistics
import sys
from collections import defaultdict

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(list)
for r in runs:
    by[(r["pacing"], r["stack"])].append(r)


def fmt(vals, digits=0):
    med = statistics.median(vals)
    return f"{med:.{digits}f} ({min(vals):.{digits}f}-{max(vals):.{digits}f})"


def ratio(pacing, stack, base, key="p99_us"):
    """Median of per-round ratios stack/base."""
    b = {r["round"]: r[key] for r in by.get((pacing, base), [])}
    rs = [r[key] / b[r["round"]] for r in by[(pacing, stack)] if r["round"] in b]
    return f"{statistics.median(rs):.2f}" if rs else "-"


print()
print("| pacing | stack | rounds | p50 us | p99 us | p999 us | p99/tcp | p99/tls "
      "| server CPU s | client CPU s | delivered | UDP dgrams/msg |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for (pacing, stack), rs in sorted(by.items(), key=lambda kv: (kv[0][0], ["tcp", "tls", "quinn", "s2n"].index(kv[0][1]) if kv[0][1] in ["tcp", "tls", "quinn", "s2n"] else 9)):
    udp = [r["udp_per_msg"] for r in rs]
    print(f"| {pacing} | {stack} | {len(rs)} | {fmt([r['p50_us'] for r in rs])} "
          f"| {fmt([r['p99_us'] for r in rs])} | {fmt([r['p999_us'] for r in rs])} "
          f"| {ratio(pacing, stack, 'tcp')} | {ratio(pacing, stack, 'tls')} "
          f"| {fmt([r['server_cpu_s'] for r in rs], 2)} | {fmt([r['client_cpu_s'] for r in rs], 2)} "
          f"| {min(r['delivered_ratio'] for r in rs):.4f} "
          f"| {fmt(udp, 2) if max(udp) > 0.01 else '-'} |")

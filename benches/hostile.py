#!/usr/bin/env python3
"""A calm pair's relay latency while one hostile address attacks the gateway,
as benches/README.md reports it ("One flooding client, one calm pair").

    benches/hostile.py ROUNDS [--rt] [--duration S] [--rate R] [--out FILE]

Per round, every attack in a shuffled order, each on a fresh release gateway
(pinned to CPU 0) with the limits a deployment would set
(RATE_LIMIT_PER_SEC=250 so that the calm 200/s fits, CONN_RATE_PER_IP=20,
MAX_CONNECTIONS_PER_IP=100):

1. baseline: `loadgen pairs --pairs 1 --rate R` (one calm pair from
   127.0.0.1, one-way relay latency of every signal) for S seconds;
2. attack: `loadgen attack --kind K --from 127.0.0.2` starts, and after 2 s
   of it the same calm `pairs` runs again for S seconds, then the attacker
   stops.

The calm loader and the attacker share CPU 1; --rt (needs root) runs the
calm loader under SCHED_FIFO (chrt -f 50) so that the attacker's own CPU
use cannot delay the calm loader's clock readings, and the gateway at
nice -15 so that other jobs on a shared machine do not take CPU 0 from it
(not SCHED_FIFO: a gateway saturated by a flood would meet the kernel's RT
throttling, 50 ms stopped every second). The attacker runs at nice 10. Binaries from $PANTHEON_TARGET (default
target/release): `cargo build --release -p pantheon-gateway -p
pantheon-benches --bin pantheon --bin loadgen`.

Prints one JSON line per attack run and a summary per attack: calm p50 and
p99 under attack, their ratio to the baseline of the same gateway (median
and range over rounds), and what the gateway refused (from /metrics).
"""
import argparse, json, os, random, re, signal, statistics, subprocess, time, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("rounds", type=int)
ap.add_argument("--rt", action="store_true")
ap.add_argument("--duration", type=float, default=10.0)
ap.add_argument("--rate", type=float, default=200.0)
ap.add_argument("--attacks", default="signal-flood,join-flood,oversized,slowloris,conn-flood")
ap.add_argument("--out")
a = ap.parse_args()
T = os.environ.get("PANTHEON_TARGET", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release"))
# The calm loader never saturates its CPU, so SCHED_FIFO shields it without
# meeting the kernel's RT throttling (95 % of each second); the gateway does
# saturate CPU 0 under a flood, and as an RT task it would be stopped for
# 50 ms every second: it gets a high CFS priority instead.
CALM = ["chrt", "-f", "50"] if a.rt else []
GW = ["nice", "-n", "-15"] if a.rt else []
LO = ["nice", "-n", "10"]
ENV = dict(os.environ, HOST="127.0.0.1", RUST_LOG="warn",
           RATE_LIMIT_PER_SEC="250", RATE_LIMIT_BURST="500",
           CONN_RATE_PER_IP="20", MAX_CONNECTIONS_PER_IP="100")
CONNECTIONS = {"signal-flood": 4, "join-flood": 8, "oversized": 8, "slowloris": 100, "conn-flood": 16}


def wait_ready(port):
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1); return
        except Exception: time.sleep(0.1)
    raise SystemExit(f"gateway on {port} not ready")


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'pantheon_(connections_refused|errors|connections_closed)_total\{(.*)\} (\d+)', line)
        if m and int(m.group(3)) > 0:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            key = m.group(1) + ":" + (labels.get("reason") or labels.get("code") or "?")
            out[key] = out.get(key, 0) + int(m.group(3))
    return out


def calm(port):
    cmd = CALM + ["taskset", "-c", "1", f"{T}/loadgen", "--json", "--url", f"ws://127.0.0.1:{port}/ws",
                "pairs", "--pairs", "1", "--rate", str(a.rate), "--duration", str(a.duration),
                "--warmup", "1", "--drain", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not lines: raise SystemExit(out.stdout + out.stderr)
    return json.loads(lines[-1])


rows = []
attacks = a.attacks.split(",")
for r in range(a.rounds):
    order = attacks[:]; random.shuffle(order)
    for kind in order:
        port = random.randint(20000, 29000)
        gw = subprocess.Popen(GW + ["taskset", "-c", "0", f"{T}/pantheon"], env=dict(ENV, PORT=str(port)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(port)
        base = calm(port)
        atk = subprocess.Popen(LO + ["taskset", "-c", "1", f"{T}/loadgen", "--json", "--url", f"ws://127.0.0.1:{port}/ws",
                                     "attack", "--kind", kind, "--from", "127.0.0.2",
                                     "--connections", str(CONNECTIONS[kind]), "--duration", str(a.duration + 6)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        under = calm(port)
        out, err = atk.communicate(timeout=a.duration + 30)
        lines = [l for l in out.splitlines() if l.startswith("{")]
        attack = json.loads(lines[-1]) if lines else {"error": err[-500:]}
        refused = metrics(port)
        gw.send_signal(signal.SIGKILL); gw.wait()
        b, u = base["latency_us"], under["latency_us"]
        row = dict(round=r, attack=kind, base_p50=b["p50"], base_p99=b["p99"], p50=u["p50"], p99=u["p99"],
                   max=u["max"], ratio_p50=u["p50"] / b["p50"], ratio_p99=u["p99"] / b["p99"],
                   delivered=under["delivered_ratio"], calm_errors=under["errors"],
                   attacker_sent_per_sec=round(attack.get("sent_per_sec", 0)),
                   attacker_connects=attack.get("connects"), attacker_outcomes=attack.get("outcomes"),
                   attacker_errors=attack.get("errors"), gateway=refused)
        rows.append(row)
        print(json.dumps(row), flush=True)


def rng(v, fmt="{:.0f}"):
    v = sorted(v)
    return f"{fmt.format(statistics.median(v))} ({fmt.format(v[0])}-{fmt.format(v[-1])})"


print(f"\n{'attack':<13} {'calm p50 us':<18} {'calm p99 us':<18} {'base p99 us':<18} {'p50 ratio':<18} {'p99 ratio':<18} n")
for kind in attacks:
    rs = [x for x in rows if x["attack"] == kind]
    print(f"{kind:<13} {rng([x['p50'] for x in rs]):<18} {rng([x['p99'] for x in rs]):<18} "
          f"{rng([x['base_p99'] for x in rs]):<18} {rng([x['ratio_p50'] for x in rs], '{:.2f}'):<18} "
          f"{rng([x['ratio_p99'] for x in rs], '{:.2f}'):<18} {len(rs)}")
if a.out:
    json.dump(rows, open(a.out, "w"), indent=1)

#!/usr/bin/env python3
"""Interleaved load-generator rounds over fresh gateways, as benches/README.md
reports them.

    benches/rounds.py ROUNDS single|cross [--rt] [--tls] [--pacing even|tick] [--out FILE]

single: per round, `pairs` at 10 000/s over WebSocket and WebTransport (order
alternating between rounds), gateway pinned to CPU 0 and loader to CPU 1,
with the gateway's CPU time. cross: per round, Redis + two gateways; `pairs`
at 10 000/s and max `throughput` with every sender on the first gateway and
its receiver on the second. --tls (single): the gateway serves TLS on its
TCP port (a certificate from `pantheon gen-cert`), so WebSocket is `wss://`
and both transports are encrypted; both trust it with --insecure. --pacing
is `loadgen pairs --pacing` (default even). --rt runs Redis, the gateways and the loader
under SCHED_FIFO (chrt -f 50, needs root) so that other jobs on a shared
machine do not preempt them. Binaries from $PANTHEON_TARGET (default
target/release): build them with
`cargo build --release -p pantheon-gateway -p pantheon-benches`.
Prints one JSON line per run, and a summary (median and range) at the end.
"""
import argparse, json, os, random, resource, signal, ssl, subprocess, sys, tempfile, time, urllib.request, statistics
ap = argparse.ArgumentParser()
ap.add_argument("rounds", type=int)
ap.add_argument("kind", choices=["single", "cross"])
ap.add_argument("--rt", action="store_true")
ap.add_argument("--tls", action="store_true")
ap.add_argument("--pacing", choices=["even", "tick"], default="even")
ap.add_argument("--out")
a = ap.parse_args()
T = os.environ.get("PANTHEON_TARGET", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release"))
N, RT, KIND = a.rounds, a.rt, a.kind
PRE = ["chrt", "-f", "50"] if RT else []
ENV = dict(os.environ, RATE_LIMIT_PER_SEC="1000000", RATE_LIMIT_BURST="1000000",
           MAX_CONNECTIONS="100000", OUTBOUND_QUEUE="65536", HOST="127.0.0.1", RUST_LOG="warn")

TLS = {}
if a.tls:
    d = tempfile.mkdtemp(prefix="pantheon-bench-tls-")
    subprocess.run([f"{T}/pantheon", "gen-cert", "--out-dir", d], check=True, stdout=subprocess.DEVNULL)
    TLS = {"TLS_CERT": f"{d}/cert.pem", "TLS_KEY": f"{d}/key.pem"}
INSECURE = ssl._create_unverified_context()

def wait_ready(port):
    scheme = "https" if TLS else "http"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/ready", timeout=1, context=INSECURE); return
        except Exception: time.sleep(0.1)
    raise SystemExit(f"gateway on {port} not ready")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def gateway(port, cpuset=None, extra=None):
    env = dict(ENV, PORT=str(port), **(extra or {}))
    cmd = PRE + (["taskset", "-c", cpuset] if cpuset else []) + [f"{T}/pantheon"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port); return p

def loadgen(args, cpuset=None):
    """The loader's report, with its CPU time as `loader_cpu_s`."""
    cmd = PRE + (["taskset", "-c", cpuset] if cpuset else []) + [f"{T}/loadgen", "--json"] + args
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not lines: raise SystemExit(out.stdout + out.stderr)
    rep = json.loads(lines[-1])
    rep["loader_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return rep

PAIRS = ["pairs", "--pairs", "100", "--rate", "10000", "--duration", "8", "--warmup", "2", "--pacing", a.pacing]
THRU = ["throughput", "--pairs", "100", "--window", "64", "--duration", "8", "--warmup", "2"]
rows = []
for r in range(N):
    if KIND == "single":
        order = ["ws", "wt"] if r % 2 == 0 else ["wt", "ws"]
        for t in order:
            port = random.randint(20000, 29000)
            gw = gateway(port, "0", TLS)
            c0 = cpu(gw.pid)
            url = f"{'wss' if TLS else 'ws'}://127.0.0.1:{port}/ws"
            rep = loadgen(["--url", url, "--transport", t] + (["--insecure"] if TLS else []) + PAIRS, "1")
            rows.append(dict(round=r, transport=t, p50=rep["latency_us"]["p50"], p99=rep["latency_us"]["p99"],
                             p999=rep["latency_us"]["p999"], delivered=rep["delivered_ratio"], cpu_s=cpu(gw.pid) - c0,
                             loader_cpu_s=rep["loader_cpu_s"], tls=bool(TLS), pacing=a.pacing))
            gw.send_signal(signal.SIGKILL); gw.wait()
            print(json.dumps(rows[-1]), flush=True)
    else:
        rport = random.randint(45000, 49000)
        redis = subprocess.Popen(PRE + ["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        p1 = random.randint(20000, 29000); p2 = p1 + 1
        gws = [gateway(p, None, {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(rport), "SERVER_ID": f"gw-{p}"}) for p in (p1, p2)]
        time.sleep(0.5)
        for name, args in (("cross-pairs", PAIRS), ("cross-throughput", THRU)):
            rep = loadgen(["--url", f"ws://127.0.0.1:{p1}/ws", "--peer-url", f"ws://127.0.0.1:{p2}/ws"] + args)
            row = dict(round=r, workload=name, p50=rep["latency_us"]["p50"], p99=rep["latency_us"]["p99"])
            for k in ("delivered_ratio", "signals_per_sec", "rate", "delivered_per_sec"):
                if k in rep: row[k] = rep[k]
            rows.append(row); print(json.dumps(row), flush=True)
        for g in gws: g.send_signal(signal.SIGKILL); g.wait()
        redis.kill(); redis.wait()
def summary(key, rows, field):
    v = sorted(r[field] for r in rows if r.get(field) is not None)
    if v:
        print(f"{key} {field}: median {statistics.median(v):.1f} range {v[0]:.1f}-{v[-1]:.1f} (n={len(v)})")
groups = {}
for row in rows:
    groups.setdefault(row.get("transport") or row.get("workload"), []).append(row)
for key, rs in groups.items():
    for field in ("p50", "p99", "p999", "cpu_s", "loader_cpu_s", "delivered_per_sec"):
        summary(key, rs, field)
if KIND == "single":
    ws = "wss" if TLS else "ws"
    for q in ("p50", "p99"):
        ratios = []
        for r in range(N):
            by = {x["transport"]: x for x in rows if x["round"] == r}
            ratios.append(by["wt"][q] / by["ws"][q])
        print(f"wt/{ws} {q} per round: " + ", ".join(f"{x:.2f}" for x in ratios) + f"; median {statistics.median(ratios):.2f}")
if a.out:
    json.dump(rows, open(a.out, "w"), indent=1)

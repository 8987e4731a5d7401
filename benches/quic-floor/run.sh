#!/usr/bin/env bash
# Interleaved rounds of the quic-floor relay on each stack (see README.md).
# Usage: benches/quic-floor/run.sh [ROUNDS]   (default 3)
# Environment: STACKS ("tcp tls quinn s2n"), PACINGS ("tick even"),
# DURATION (8), WARMUP (2), PAIRS (100), RATE (10000), PORT (4600),
# CLIENT_STACK (load every QUIC server with this stack's client, e.g. quinn),
# OUT (results file, default quic-floor-results.jsonl in the current
# directory), CARGO_TARGET_DIR (where the release binary is built).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rounds=${1:-3}
stacks=${STACKS:-tcp tls quinn s2n}
pacings=${PACINGS:-tick even}
port=${PORT:-4600}
out=${OUT:-$PWD/quic-floor-results.jsonl}
target=${CARGO_TARGET_DIR:-$here/target}

cargo build --release --locked --quiet --manifest-path "$here/Cargo.toml"
bin=$target/release/quic-floor
clk=$(getconf CLK_TCK)

# utime + stime of a process (all its threads), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Udp InDatagrams, every socket on the machine (the loopback run is the traffic).
udp_in() { awk '/^Udp:/ { if (++n == 2) print $2 }' /proc/net/snmp; }

server=
cleanup() { if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; }
trap cleanup EXIT

: >"$out"
echo "# $(date -u +%FT%TZ) rounds=$rounds load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-5s %9s %9s %9s %8s %8s %9s %7s\n' stack pacing p50_us p99_us p999_us srv_cpu cli_cpu delivered udp/msg
for round in $(seq "$rounds"); do
  for pacing in $pacings; do
    for stack in $stacks; do
      chrt -f 50 taskset -c 0 "$bin" server --stack "$stack" --port "$port" 2>>"$out.server.log" &
      server=$!
      sleep 0.5
      c0=$(cpu_ticks "$server"); u0=$(udp_in)
      line=$(chrt -f 50 taskset -c 1 "$bin" client --stack "$stack" --addr "127.0.0.1:$port" \
        --pairs "${PAIRS:-100}" --rate "${RATE:-10000}" --duration "${DURATION:-8}" \
        --warmup "${WARMUP:-2}" --pacing "$pacing" ${CLIENT_STACK:+--client-stack "$CLIENT_STACK"})
      c1=$(cpu_ticks "$server"); u1=$(udp_in)
      cleanup; server=
      line=$(jq -c --argjson round "$round" \
        --argjson srv "$(awk -v a="$c0" -v b="$c1" -v k="$clk" 'BEGIN{print (b-a)/k}')" \
        --argjson udp "$((u1 - u0))" \
        '. + {round: $round, server_cpu_s: $srv, udp_datagrams: $udp,
              udp_per_msg: (if .sent > 0 then $udp / .sent else 0 end)}' <<<"$line")
      echo "$line" >>"$out"
      jq -r '[.stack, .pacing, .p50_us, .p99_us, .p999_us, .server_cpu_s, .client_cpu_s,
              .delivered_ratio, (if .udp_datagrams > 0 then (.udp_per_msg * 100 | round / 100) else "-" end)]
             | @tsv' <<<"$line" | awk -F'\t' '{printf "%-6s %-5s %9s %9s %9s %8s %8s %9s %7s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9}'
    done
  done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$here/summary.py" "$out"

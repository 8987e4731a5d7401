#!/usr/bin/env bash
# Fails (exit 1) when the sans-I/O protocol crate pulls in an I/O stack: its
# normal (non-dev, non-build) dependency tree must not mention tokio, quinn,
# axum, redis, hyper or mio, nor any crate of theirs (tokio-util, hyper-util,
# quinn-proto, ...). Prints OK otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! tree="$(cargo tree -p pantheon-protocol -e normal --prefix none 2>&1)"; then
    printf '%s\n' "$tree" >&2
    echo "check-sans-io: cargo tree failed" >&2
    exit 1
fi

forbidden='(^|[-_])(tokio|quinn|axum|redis|hyper|mio)([-_]|$)'
hits="$(printf '%s\n' "$tree" | awk '{ print $1 }' | grep -Ei "$forbidden" | sort -u || true)"
if [[ -n "$hits" ]]; then
    echo "check-sans-io: FAIL: pantheon-protocol depends on I/O crates:" >&2
    sed 's/^/  /' <<<"$hits" >&2
    echo "find out why with: cargo tree -p pantheon-protocol -e normal -i <crate>" >&2
    exit 1
fi

echo "OK: pantheon-protocol has no tokio/quinn/axum/redis/hyper/mio dependency"

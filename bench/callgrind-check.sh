#!/usr/bin/env bash
# Instructions per allowed check, counted by callgrind: repeatable on a noisy machine, where
# wall-clock runs are not. Runs BINARY (a release quotagate) under valgrind twice, sending FEW and
# then MANY checks over one keep-alive connection, and prints (total(MANY) - total(FEW)) /
# (MANY - FEW), which leaves start-up and shutdown out.
#
#   bench/callgrind-check.sh BINARY [CONFIG] [FEW] [MANY]
#
# CONFIG defaults to bench/config/quotagate-10k.toml (its listen address is replaced). Needs
# valgrind (callgrind_annotate) and curl. Compare two builds by running it on each.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$1"
config="${2:-bench/config/quotagate-10k.toml}"
few="${3:-500}"
many="${4:-2500}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

total() {
    local n="$1" port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    sed -e "s/^listen = .*/listen = \"127.0.0.1:$port\"/" -e '/^admin_listen = /d' "$config" >"$work/q.toml"
    # The admin listener on a port of its own, after the listen line.
    sed -i "/^listen = /a admin_listen = \"127.0.0.1:$((port + 1))\"" "$work/q.toml"
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" "$bin" serve --config "$work/q.toml" \
        >"$work/log.$n" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" -H 'Authorization: Bearer warm' && break
        sleep 0.5
    done
    local urls=()
    for _ in $(seq 1 "$n"); do urls+=("http://127.0.0.1:$port/"); done
    curl -s -o /dev/null -H 'Authorization: Bearer tok-1' -H 'X-Forwarded-Method: GET' \
        -H 'X-Forwarded-Uri: /api/v1/items?page=2' -H 'X-Forwarded-Host: api.example.com' "${urls[@]}"
    kill -INT "$pid"
    wait "$pid" || true
    callgrind_annotate "$work/cg.$n" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

a="$(total "$few")"
b="$(total "$many")"
echo "instructions per allowed check: $(((b - a) / (many - few))) ($bin, $config)"

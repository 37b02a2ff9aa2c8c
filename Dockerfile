# quotagate container image: one static binary on `scratch`.
#
# Two ways to build the same image:
#
#   docker build -t quotagate .
#       Compiles inside the official Rust image (needs registry access). Uses BuildKit's
#       skipping of unused stages, or, with the legacy builder, builds the small `prebuilt`
#       stage from the placeholder in deploy/prebuilt/ and throws it away.
#
#   scripts/build-image.sh
#       No pulls: builds a static musl binary on the host, stages it with the host's CA roots
#       in a temporary context and runs `docker build --target prebuilt`. Every stage that
#       target builds starts `FROM scratch`, so nothing is downloaded.
#
# Both end in the same `runtime` stage: no shell, numeric non-root user, embedded default
# config (the binary carries it), CA roots for rediss://, a HEALTHCHECK that needs no curl.

ARG RUST_VERSION=1

# --- runtime: everything the final image is, except its files ------------------------------
FROM scratch AS runtime
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="quotagate" \
      org.opencontainers.image.description="A forwardAuth rate-limit service for Traefik: per-token plans, calendar windows, GCRA." \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="scratch"
# rustls and OpenSSL-style lookups both honour these, so rediss:// finds the bundle.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_DIR=/etc/ssl/certs \
    QUOTAGATE_LOG=info \
    QUOTAGATE_LOG_FORMAT=json
# 65532 is the conventional "nonroot" id of distroless images; numeric, so no /etc/passwd is
# needed and Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
STOPSIGNAL SIGTERM
# `quotagate healthcheck` GETs /healthz itself (there is no curl here), on loopback, at the
# address `serve` uses: the config's admin_listen, else its listen (or QUOTAGATE_LISTEN). It
# reads the config the way `serve` does, from QUOTAGATE_CONFIG (else the embedded default), but
# it does not see the container's command line: name the config with
# `-e QUOTAGATE_CONFIG=/etc/quotagate/quotagate.toml` (as docker-compose.yml and production.yml
# do), not with `serve --config`.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/quotagate", "healthcheck"]
ENTRYPOINT ["/quotagate"]
CMD ["serve"]

# --- prebuilt: the image from files staged on the host (scripts/build-image.sh) ------------
# PREBUILT is a directory laid out like the image's root: quotagate and
# etc/ssl/certs/ca-certificates.crt. The default names the placeholder kept in git, so that
# builders which run every stage (the legacy builder, docker-compose v1) still get through
# this one.
FROM runtime AS prebuilt
ARG PREBUILT=deploy/prebuilt
COPY ${PREBUILT}/ /

# --- build: compile in the official Rust image (musl on Alpine: static by default) ---------
FROM rust:${RUST_VERSION}-alpine AS build
# gcc and musl-dev build ring (TLS for rediss://) and blake3; the musl target links statically.
RUN apk add --no-cache gcc musl-dev ca-certificates
WORKDIR /src
COPY . .
# Strip symbols without touching Cargo.toml; --locked builds exactly Cargo.lock.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --bin quotagate \
 && mkdir -p /rootfs/etc/ssl/certs \
 && cp target/release/quotagate /rootfs/quotagate \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt

# --- image (default): the runtime stage plus the binary compiled above ---------------------
FROM runtime AS image
COPY --from=build /rootfs/ /

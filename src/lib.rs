//! quotagate: a rate-limit service for Traefik's forwardAuth middleware.
//!
//! A check reads top to bottom: headers -> [`identity`] -> [`policy`] -> [`limiter`] ->
//! [`store`] -> decision -> response ([`server`]).
//!
//! - [`config`]: TOML -> validated [`config::Config`], every problem at once.
//! - [`request`]: the forwarded request (method, host, normalised path, query).
//! - [`identity`]: who is calling: token sources, client IP, keyed hashes and fingerprints.
//! - [`policy`]: which limits apply: plans, tokens, rules on host/path/method.
//! - [`limiter`]: the algorithms as pure arithmetic (fixed calendar window, sliding, GCRA).
//! - [`store`]: the counters and the atomic check-and-count (memory: sharded maps, one lock per check).
//! - [`ticket`]: tickets handed to admitted requests and back to `POST /v1/tickets/close`.
//! - [`server`]: axum routes, the forwardAuth handler, responses, reload and shutdown.
//! - [`telemetry`]: logging and Prometheus metrics.
//! - [`overrides`]: per-token plans and limits set at runtime, kept beside the config.
//! - [`admin`]: the admin API on `server.admin_listen` (overrides, usage, reset, explain).
//! - [`clock`]: the time source, injectable for tests.

pub mod admin;
pub mod clock;
pub mod config;
pub mod identity;
pub mod limiter;
pub mod overrides;
pub mod policy;
pub mod request;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod ticket;

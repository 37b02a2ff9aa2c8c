//! The raw config: what serde reads from TOML, before any check. Every key is optional where a
//! default exists; values stay as written (strings, `i64`) so that validation can name the key,
//! the value and what was expected. Unknown keys are found by `serde_ignored` (see
//! `Config::parse`), so these types do not deny them.
//!
//! A new key goes here first, then into the section's validation (`server.rs`, `identity.rs`,
//! `policy.rs`, `rules.rs`, `limits.rs`, `store.rs`, `answers.rs`).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub(super) tokens_file: Option<String>,
    pub(super) server: RawServer,
    pub(super) identity: RawIdentity,
    pub(super) defaults: RawDefaults,
    pub(super) plans: BTreeMap<String, RawPlan>,
    pub(super) tokens: BTreeMap<String, toml::Value>,
    pub(super) rules: Vec<RawRule>,
    pub(super) store: RawStore,
    pub(super) answers: RawAnswers,
    pub(super) admin: Option<super::admin::RawAdmin>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) watch_interval: Option<String>,
    pub(super) shutdown_timeout: Option<String>,
    pub(super) tls: Option<RawTls>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_connections: Option<i64>,
    pub(super) max_tls_handshakes: Option<i64>,
    pub(super) tls_handshake_timeout: Option<String>,
    pub(super) http2_keep_alive_interval: Option<String>,
    pub(super) http2_keep_alive_timeout: Option<String>,
    pub(super) http2_max_concurrent_streams: Option<i64>,
    pub(super) tickets_listen: Option<String>,
    pub(super) tickets_token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) client_ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawIdentity {
    pub(super) sources: Option<Vec<String>>,
    pub(super) missing: Option<String>,
    pub(super) max_token_length: Option<i64>,
    pub(super) hash_key: Option<String>,
    pub(super) hash_key_file: Option<String>,
    pub(super) plan_header: Option<String>,
    pub(super) plan_header_secret_file: Option<String>,
    pub(super) plan_secret_header: Option<String>,
    pub(super) ambiguous: Option<String>,
    pub(super) allow_ips: Vec<String>,
    pub(super) client_ip: RawClientIp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawClientIp {
    pub(super) depth: Option<i64>,
    pub(super) excluded: Option<Vec<String>>,
    pub(super) ipv6_prefix: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawDefaults {
    pub(super) plan: Option<String>,
    pub(super) unknown_tokens: Option<String>,
    pub(super) anonymous_plan: Option<String>,
    pub(super) count_denied: bool,
    pub(super) dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAnswers {
    pub(super) ratelimit_on_allowed: Option<bool>,
    pub(super) tickets: Option<String>,
    pub(super) ticket_hold: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawPlan {
    pub(super) limits: Vec<RawLimit>,
    pub(super) unlimited: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawLimit {
    pub(super) name: Option<String>,
    pub(super) requests: Option<i64>,
    pub(super) per: Option<String>,
    pub(super) algorithm: Option<String>,
    pub(super) average: Option<i64>,
    pub(super) period: Option<String>,
    pub(super) burst: Option<i64>,
    pub(super) max_delay: Option<String>,
    pub(super) counts: Option<String>,
    pub(super) concurrent: Option<i64>,
    pub(super) hold: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRule {
    pub(super) name: Option<String>,
    pub(super) host: Option<String>,
    pub(super) path_prefix: Option<String>,
    pub(super) path: Option<String>,
    pub(super) methods: Vec<String>,
    pub(super) exempt: bool,
    pub(super) dry_run: bool,
    pub(super) cost: Option<i64>,
    pub(super) limits: BTreeMap<String, Vec<RawLimit>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawStore {
    pub(super) kind: Option<String>,
    pub(super) max_keys: Option<i64>,
    pub(super) memory: RawMemory,
    pub(super) redis: Option<RawRedis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawMemory {
    pub(super) snapshot: Option<RawSnapshot>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawSnapshot {
    pub(super) path: Option<String>,
    pub(super) interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRedis {
    pub(super) url: Option<String>,
    pub(super) cluster: Option<Vec<String>>,
    pub(super) password_file: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) command_timeout: Option<String>,
    pub(super) on_error: Option<String>,
    pub(super) breaker_threshold: Option<i64>,
    pub(super) breaker_reattempt: Option<String>,
    pub(super) local: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTokensFile {
    pub(super) tokens: BTreeMap<String, toml::Value>,
}

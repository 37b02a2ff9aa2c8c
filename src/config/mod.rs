//! The configuration: TOML parsed into [`RawConfig`] (plain serde types, every key optional
//! where a default exists), then validated into [`Config`], whose types cannot hold an invalid
//! value. Every problem is reported at once, each with its key path, the value and what was
//! expected. Unknown keys are problems too (found with `serde_ignored`, so all of them are listed,
//! not just the first), and so are values of the wrong type. What is allowed but probably not
//! meant is a warning ([`Config::warnings`]). Tokens never appear in messages: a token's key path
//! shows its fingerprint.
//!
//! Layout, one file per concern:
//! - `raw.rs`: the serde types, as written in the file.
//! - `read.rs`: TOML into the raw types, every type error reported with its key path.
//! - `leaf.rs`: values that parse themselves (durations, addresses, networks, sources, windows,
//!   keywords), each with its message.
//! - `validate.rs`: the [`Validator`](validate::Validator) that collects problems, and the order
//!   in which sections are validated.
//! - one file per section, holding its validated types and its checks: `server.rs`
//!   (`[server]`, `[server.tls]`), `identity.rs` (`[identity]`), `policy.rs` (`[plans]`,
//!   `[tokens]`, `tokens_file`, `[defaults]`), `rules.rs` (`[[rules]]`), `limits.rs` (a list of
//!   limits, in plans and rules), `store.rs` (`[store]`), `answers.rs` (`[answers]`),
//!   `admin.rs` (`[admin]`, and the checks the admin API borrows).
//!
//! A new key: its raw field in `raw.rs`, its check in its section's file, its validated field in
//! that section's type.

mod admin;
mod answers;
mod error;
mod identity;
mod leaf;
mod limits;
mod policy;
mod raw;
mod read;
mod rules;
mod server;
mod store;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use admin::Admin;
pub(crate) use admin::{field_of, override_limits, unknown_plan, unpresentable, without_strings};
pub use answers::{Answers, Tickets};
pub use error::{ConfigError, Problem};
pub use raw::RawConfig;
pub use server::{Connections, Server, TlsFiles};
pub use store::{redact, Backend, OnError, RedisConfig, RedisUrl, Secret, Snapshot, StoreConfig};

use crate::identity::Identity;
use crate::policy::Policy;

/// The config used when no file is given: every API token gets 10 requests per minute.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from: a path, or `<embedded default>`.
    pub origin: String,
    /// Files read for it (the config and its tokens file), for change detection.
    pub files: Vec<PathBuf>,
    pub server: Server,
    pub identity: Identity,
    pub policy: Policy,
    pub store: StoreConfig,
    pub answers: Answers,
    /// `[admin]`: the admin API, served on `server.admin_listen`; `None`: not served.
    pub admin: Option<Admin>,
    /// The check listener's TLS settings, built from the files in `server.tls` when the config
    /// was read: certificates and key parsed and matched, ALPN `h2` then `http/1.1`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// What is allowed but probably not meant (the built-in hash key, a token listed twice):
    /// `check-config` prints these, `serve` logs them at start and at each reload.
    pub warnings: Vec<Problem>,
    /// Key paths of the buckets with `average = 0`, which limit nothing (as in Traefik): they
    /// are left out of their lists, and a plan with no other limit is unlimited.
    pub unlimited: Vec<String>,
}

impl Config {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: origin.clone(), error })?;
        Config::parse(&text, &origin, path.parent())
    }

    /// The embedded default config.
    pub fn embedded() -> Config {
        Config::parse(DEFAULT_CONFIG, "<embedded default>", None).expect("the embedded config is valid")
    }

    /// Validates config text. `dir` resolves relative paths (tokens and key files).
    pub fn parse(text: &str, origin: &str, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let read = read::read(text, origin)?;
        let mut v = validate::Validator::new(dir);
        let config = v.config(read.raw, origin);
        // A value of the wrong type was taken out: what validation says of its absence is not
        // news (see `follow_on`).
        let follow_on = |p: &Problem| read.taken_out.iter().any(|k| follow_on(p, k));
        let mut problems = read.problems;
        problems.extend(v.problems.into_iter().filter(|p| !follow_on(p)));
        match config {
            Some(mut c) if problems.is_empty() => {
                c.warnings = v.warnings;
                Ok(c)
            }
            _ => Err(ConfigError::Invalid { path: origin.to_owned(), problems }),
        }
    }

    /// A one-paragraph summary for `check-config` and the startup log.
    pub fn summary(&self) -> String {
        let p = &self.policy;
        let plans: Vec<&str> = p.plans.iter().map(|p| &*p.name).collect();
        let rules: Vec<&str> = p.rules.iter().map(|r| &*r.name).collect();
        let store = match &self.store.backend {
            Backend::Memory => format!("memory (at most {} keys)", self.store.max_keys),
            Backend::Redis(r) => {
                let urls: Vec<String> = r.urls.iter().map(ToString::to_string).collect();
                let kind = if r.cluster { "redis cluster" } else { "redis" };
                format!("{kind} {} (on error: {:?})", urls.join(", "), r.on_error)
            }
        };
        let listen = match &self.server.tls {
            None => self.server.listen.to_string(),
            Some(t) if t.client_ca.is_some() => {
                format!("{} (TLS, h2, client certificates required)", self.server.listen)
            }
            Some(_) => format!("{} (TLS, h2)", self.server.listen),
        };
        let api = if self.admin.is_some() { " with the admin API" } else { "" };
        let admin = self.server.admin_listen.map(|a| format!(", admin {a}{api}")).unwrap_or_default();
        let tickets = match (self.server.tickets_listen, self.server.tickets_token) {
            (Some(t), Some(_)) => format!(", tickets {t} (bearer token required)"),
            (Some(t), None) => format!(", tickets {t}"),
            (None, _) => String::new(),
        };
        let unlimited = if self.unlimited.is_empty() {
            String::new()
        } else {
            format!(", no limit (average = 0): {}", self.unlimited.join(", "))
        };
        format!(
            "{}: {} plans ({}), {} rules ({}), {} tokens, default plan {}, store {}, listen {}{}{}{}",
            self.origin,
            plans.len(),
            plans.join(", "),
            rules.len(),
            if rules.is_empty() { "none".to_owned() } else { rules.join(", ") },
            p.tokens.len(),
            p.plan(p.default_plan).name,
            store,
            listen,
            admin,
            tickets,
            unlimited,
        )
    }
}

/// Whether `p` may only be the consequence of the value at `taken` being taken out: it is about
/// that key or below it, about the table that held it (`plans.pro: has no limits` once
/// `plans.pro.unlimited` is gone), or says a key beside it is missing (`store.redis.url:
/// missing` once `store.redis.cluster` is gone).
fn follow_on(p: &Problem, taken: &str) -> bool {
    let under = |key: &str, prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
    };
    if under(&p.key, taken) {
        return true;
    }
    let parent = match taken.rfind(['.', '[']) {
        Some(i) => &taken[..i],
        None => return false,
    };
    p.key == parent || (under(&p.key, parent) && p.message.starts_with("missing"))
}

//! `[store]`: where counters live (memory, with optional snapshots, or Redis), validated into
//! [`StoreConfig`]. Redis passwords never reach a message: URLs print redacted.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::leaf::quoted;
use super::raw::{RawRedis, RawSnapshot, RawStore};
use super::validate::Validator;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bound on in-memory entries (the memory store, and the Redis store's local tier and
    /// fallback).
    pub max_keys: u64,
    pub backend: Backend,
    /// Memory store only: periodic snapshots of the counters.
    pub snapshot: Option<Snapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis(RedisConfig),
}

/// `store.memory.snapshot`: counters are written to `path` every `interval` and at shutdown,
/// and read back at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub path: PathBuf,
    pub interval: Duration,
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the Redis store does when Redis cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Decide from the in-memory store: each replica enforces its own share.
    Local,
    /// Fail open: let requests through.
    Allow,
    /// Fail closed: 503 with Retry-After.
    Deny,
}

/// `[store.redis]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// One URL (`redis://` or `rediss://`), or several for Redis Cluster. Passwords in URLs
    /// are kept here but never printed: see [`redact`].
    pub urls: Vec<RedisUrl>,
    pub cluster: bool,
    /// From `password_file` or `password_env`; a password in the URL stays in the URL.
    pub password: Option<Secret>,
    pub prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub on_error: OnError,
    pub breaker_threshold: u32,
    pub breaker_reattempt: Duration,
    /// Answer denials for keys known to be over their limit from memory, without Redis.
    pub local: bool,
}

/// A Redis URL, which may hold a password: `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// A Redis URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// `store.kind`.
#[derive(Clone, Copy)]
enum Kind {
    Memory,
    Redis,
}

impl Validator {
    pub(super) fn store(&mut self, raw: RawStore) -> Option<StoreConfig> {
        let max_keys = raw.max_keys.unwrap_or(1_000_000);
        if max_keys < 1 {
            self.problem("store.max_keys", format!("must be greater than 0 (got {max_keys})"));
        }
        let snapshot = raw.memory.snapshot.and_then(|s| self.snapshot(s));
        let kind = raw.kind.as_deref().unwrap_or("memory");
        let backend = match self.choice(
            "store.kind",
            "store",
            kind,
            &[("memory", Kind::Memory), ("redis", Kind::Redis)],
        ) {
            Some(Kind::Memory) => {
                if raw.redis.is_some() {
                    self.problem("store.redis", "is set but store.kind is \"memory\" (set kind = \"redis\")");
                }
                Some(Backend::Memory)
            }
            Some(Kind::Redis) => match raw.redis {
                Some(r) => self.redis(r).map(Backend::Redis),
                None => {
                    self.problem(
                        "store.redis",
                        "missing: kind = \"redis\" needs [store.redis] with url or cluster",
                    );
                    None
                }
            },
            None => None,
        };
        if snapshot.is_some() && matches!(backend, Some(Backend::Redis(_))) {
            self.problem(
                "store.memory.snapshot",
                "only applies to kind = \"memory\" (Redis keeps the counters)",
            );
        }
        Some(StoreConfig {
            max_keys: u64::try_from(max_keys).ok().filter(|n| *n >= 1)?,
            backend: backend?,
            snapshot,
        })
    }

    fn snapshot(&mut self, raw: RawSnapshot) -> Option<Snapshot> {
        let path = match raw.path {
            Some(p) if !p.is_empty() => self.resolve(&p),
            _ => {
                self.problem("store.memory.snapshot.path", "missing (a file to keep the counters in)");
                return None;
            }
        };
        let interval =
            self.duration("store.memory.snapshot.interval", raw.interval.as_deref().unwrap_or("10s"))?;
        if interval < Duration::from_secs(1) {
            let msg = format!("must be at least 1s (got {})", humantime::format_duration(interval));
            self.problem("store.memory.snapshot.interval", msg);
            return None;
        }
        Some(Snapshot { path, interval })
    }

    fn redis(&mut self, raw: RawRedis) -> Option<RedisConfig> {
        const KEY: &str = "store.redis";
        let (urls, cluster) = match (raw.url, raw.cluster) {
            (Some(_), Some(_)) => {
                self.problem(KEY, "set either url or cluster, not both");
                return None;
            }
            (Some(u), None) => (vec![u], false),
            (None, Some(c)) if !c.is_empty() => (c, true),
            _ => {
                self.problem(
                    format!("{KEY}.url"),
                    "missing (e.g. \"redis://redis:6379/0\", or cluster = [urls])",
                );
                return None;
            }
        };
        let mut ok = true;
        for (i, url) in urls.iter().enumerate() {
            let key = if cluster { format!("{KEY}.cluster[{i}]") } else { format!("{KEY}.url") };
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("redis" | "rediss")) {
                let got = scheme.map_or_else(|| quoted(&redact(url)), quoted);
                self.problem(key, format!("unsupported scheme {got} (expected redis:// or rediss://)"));
                ok = false;
            } else if let Err(e) = redis::Client::open(url.as_str()) {
                // redis-rs messages do not repeat the URL, so no password leaks through them.
                self.problem(key, format!("invalid URL {}: {e}", quoted(&redact(url))));
                ok = false;
            }
        }
        let password = match (raw.password_file, raw.password_env) {
            (Some(_), Some(_)) => {
                self.problem(KEY, "set either password_file or password_env, not both");
                ok = false;
                None
            }
            (Some(f), None) => {
                let path = self.resolve(&f);
                match std::fs::read_to_string(&path) {
                    Ok(p) => Some(Secret(p.trim_end_matches(['\r', '\n']).to_owned())),
                    Err(e) => {
                        self.problem(
                            format!("{KEY}.password_file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        ok = false;
                        None
                    }
                }
            }
            (None, Some(var)) => match std::env::var(&var) {
                Ok(p) => Some(Secret(p)),
                Err(_) => {
                    self.problem(
                        format!("{KEY}.password_env"),
                        format!("environment variable {var} is not set"),
                    );
                    ok = false;
                    None
                }
            },
            (None, None) => None,
        };
        let connect_timeout =
            self.duration(format!("{KEY}.connect_timeout"), raw.connect_timeout.as_deref().unwrap_or("1s"));
        let command_timeout =
            self.duration(format!("{KEY}.command_timeout"), raw.command_timeout.as_deref().unwrap_or("50ms"));
        let on_error = self.choice(
            format!("{KEY}.on_error"),
            "value",
            raw.on_error.as_deref().unwrap_or("local"),
            &[("local", OnError::Local), ("allow", OnError::Allow), ("deny", OnError::Deny)],
        );
        let threshold = raw.breaker_threshold.unwrap_or(3);
        if !(1..=1000).contains(&threshold) {
            self.problem(
                format!("{KEY}.breaker_threshold"),
                format!("must be between 1 and 1000 (got {threshold})"),
            );
        }
        let reattempt = self
            .duration(format!("{KEY}.breaker_reattempt"), raw.breaker_reattempt.as_deref().unwrap_or("5s"));
        let prefix = raw.prefix.unwrap_or_else(|| "quotagate:".to_owned());
        if prefix.contains(['{', '}']) || prefix.len() > 64 {
            let msg = format!("must be at most 64 characters without '{{' or '}}' (got {})", quoted(&prefix));
            self.problem(format!("{KEY}.prefix"), msg);
            ok = false;
        }
        for (name, d) in [("connect_timeout", connect_timeout), ("command_timeout", command_timeout)] {
            if d.is_some_and(|d| d.is_zero()) {
                self.problem(format!("{KEY}.{name}"), "must be longer than 0s");
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        Some(RedisConfig {
            urls: urls.into_iter().map(RedisUrl).collect(),
            cluster,
            password,
            prefix,
            connect_timeout: connect_timeout?,
            command_timeout: command_timeout?,
            on_error: on_error?,
            breaker_threshold: u32::try_from(threshold).ok().filter(|t| (1..=1000).contains(t))?,
            breaker_reattempt: reattempt?,
            local: raw.local,
        })
    }
}

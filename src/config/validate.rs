//! The [`Validator`]: it collects every [`Problem`] while the sections are validated, resolves
//! relative paths against the config's folder, and records the files read (for reloads). The
//! sections' checks are `impl Validator` blocks in their own files; [`Validator::config`] calls
//! them in file order, so problems are listed in the order a reader meets the keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use super::answers::Tickets;
use super::error::Problem;
use super::leaf::{self, Address, Humane, Invalid, Network};
use super::policy::Tokens;
use super::raw::RawConfig;
use super::Config;
use crate::limiter::Nanos;

pub(super) struct Validator {
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
    /// Key paths of buckets with `average = 0`: no limit, as in Traefik.
    pub(super) unlimited: Vec<String>,
    /// Key paths of the concurrency limits: a config with any issues tickets.
    pub(super) concurrent: Vec<String>,
    /// The `hold` of a concurrency limit that sets none: `answers.ticket_hold`, validated
    /// before the limits are.
    pub(super) default_hold: Nanos,
    dir: Option<PathBuf>,
    pub(super) files: Vec<PathBuf>,
}

impl Validator {
    pub(super) fn new(dir: Option<&Path>) -> Validator {
        Validator {
            problems: Vec::new(),
            warnings: Vec::new(),
            unlimited: Vec::new(),
            concurrent: Vec::new(),
            default_hold: 0,
            dir: dir.map(Path::to_path_buf),
            files: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { key: key.into(), message: message.into() });
    }

    /// Something allowed but probably not meant: reported, not refused.
    pub(super) fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem { key: key.into(), message: message.into() });
    }

    /// A path as written in the config, relative to the config's folder.
    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        match &self.dir {
            Some(dir) if Path::new(path).is_relative() => dir.join(path),
            _ => PathBuf::from(path),
        }
    }

    /// Parses a leaf value (see `leaf.rs`), or records its problem under `key`.
    pub(super) fn leaf<T: FromStr<Err = Invalid>>(
        &mut self,
        key: impl Into<String>,
        value: &str,
    ) -> Option<T> {
        match value.parse() {
            Ok(t) => Some(t),
            Err(Invalid(message)) => {
                self.problem(key, message);
                None
            }
        }
    }

    /// The hash of the bearer token in `file` (relative to the config's folder), trimmed: at
    /// least 16 bytes of visible ASCII, as `who` send it in `Authorization: Bearer <token>`.
    /// The file is watched for changes like the config. Problems under `key` name the file and
    /// the token's length, never its content.
    pub(super) fn bearer_token_file(&mut self, key: &str, file: &str, who: &str) -> Option<blake3::Hash> {
        let path = self.resolve(file);
        let token = match std::fs::read(&path) {
            Ok(bytes) => bytes.trim_ascii().to_vec(),
            Err(e) => {
                self.problem(key, format!("cannot read {}: {e}", path.display()));
                return None;
            }
        };
        self.files.push(path);
        if token.len() < 16 {
            let msg = format!("the token must be at least 16 bytes long (got {} bytes)", token.len());
            self.problem(key, msg);
            return None;
        }
        if !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
            let msg = format!(
                "the token must be visible ASCII without spaces ({who} send it as Authorization: Bearer <token>)"
            );
            self.problem(key, msg);
            return None;
        }
        Some(blake3::hash(&token))
    }

    /// A humane duration ("30s"), or records its problem under `key`.
    pub(super) fn duration(&mut self, key: impl Into<String>, value: &str) -> Option<Duration> {
        self.leaf::<Humane>(key, value).map(|d| d.0)
    }

    /// A socket address (`IP:PORT`), or records its problem under `key`.
    pub(super) fn addr(&mut self, key: impl Into<String>, value: &str) -> Option<SocketAddr> {
        self.leaf::<Address>(key, value).map(|a| a.0)
    }

    /// A network (CIDR or single IP), or records its problem under `key`.
    pub(super) fn net(&mut self, key: impl Into<String>, value: &str) -> Option<IpNet> {
        self.leaf::<Network>(key, value).map(|n| n.0)
    }

    /// One of a few keywords (see [`leaf::choice`]), or records its problem under `key`.
    pub(super) fn choice<T: Copy>(
        &mut self,
        key: impl Into<String>,
        noun: &str,
        value: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        match leaf::choice(noun, value, options) {
            Ok(t) => Some(t),
            Err(Invalid(message)) => {
                self.problem(key, message);
                None
            }
        }
    }

    /// Validates every section; `None` if any could not be built (the problems say why).
    /// `[answers]` comes before the plans and rules: its `ticket_hold` is their limits' default
    /// `hold`.
    pub(super) fn config(&mut self, raw: RawConfig, origin: &str) -> Option<Config> {
        if self.dir.is_some() {
            self.files.push(PathBuf::from(origin));
        }
        let tickets_listen = raw.server.tickets_listen.is_some();
        let (server, tls) = self.server(raw.server);
        let (identity, extras) = self.identity(raw.identity);
        let store = self.store(raw.store);
        let file = raw.tokens_file.as_deref().map(|f| self.tokens_file(f)).unwrap_or_default();
        let tokens = Tokens { inline: raw.tokens, file };
        let answers = self.answers(raw.answers);
        self.default_hold = u64::try_from(answers.ticket_hold.as_nanos()).expect("at most MAX_SPAN");
        let policy = self.policy(raw.plans, tokens, raw.rules, raw.defaults, extras, identity.as_ref());
        if !tickets_listen {
            self.tickets_unreturnable(answers.tickets);
        }
        let admin = self.admin(raw.admin, server.as_ref());
        Some(Config {
            origin: origin.to_owned(),
            files: std::mem::take(&mut self.files),
            server: server?,
            identity: identity?,
            policy: policy?,
            store: store?,
            answers,
            admin,
            tls,
            warnings: Vec::new(),
            unlimited: std::mem::take(&mut self.unlimited),
        })
    }

    /// A config that issues tickets (a concurrency limit anywhere, or `answers.tickets =
    /// "always"`) needs `server.tickets_listen`: `POST /v1/tickets/close` is served only there,
    /// so without it backends could never close a ticket, and every slot would stay taken for
    /// its whole `hold`.
    fn tickets_unreturnable(&mut self, tickets: Tickets) {
        const WHERE: &str =
            "(POST /v1/tickets/close), which is served only on server.tickets_listen (e.g. \"0.0.0.0:8082\")";
        let msg = match (self.concurrent.first(), tickets) {
            (Some(limit), _) => format!(
                "missing: {limit} is a concurrency limit, and backends free its slots by closing tickets \
                 {WHERE}; without it every slot stays taken for its whole hold"
            ),
            (None, Tickets::Always) => format!(
                "missing: answers.tickets = \"always\" gives admitted requests tickets to close {WHERE}; \
                 without it backends could never close them"
            ),
            (None, Tickets::Concurrent) => return,
        };
        self.problem("server.tickets_listen", msg);
    }
}

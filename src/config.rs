//! The configuration: TOML parsed into [`RawConfig`] (plain serde types, every key optional
//! where a default exists), then validated into [`Config`], whose types cannot hold an invalid
//! value. Every problem is reported at once, each with its key path, the value and what was
//! expected. Unknown keys are problems too (found with `serde_ignored`, so all of them are listed,
//! not just the first). Tokens never appear in messages: a token's key path shows its fingerprint.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobBuilder};
use ipnet::IpNet;
use serde::Deserialize;

use crate::identity::{ClientIp, Hasher, Identity, Missing, Source};
use crate::limiter::{Algorithm, Limit, Window, SECOND};
use crate::policy::{HostMatch, PathMatch, Plan, PlanId, Policy, Rule, UnknownTokens};

/// The config used when no file is given: every API token gets 10 requests per minute.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// The hashing secret used when none is configured. Not secret: configure `identity.hash_key`
/// so a reader of Redis keys or snapshots cannot test guessed tokens against them.
const BUILTIN_HASH_KEY: &[u8] = b"quotagate built-in identity hash key; set identity.hash_key";

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: `plans.free.limits[1].requests`.
    pub key: String,
    /// What is wrong, with the value and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config {path}\n  {message}")]
    Syntax { path: String, message: String },
    #[error("invalid config {path}\n{}", problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, problems: Vec<Problem> },
}

impl ConfigError {
    /// The problems found, for tests and tools; a read or syntax error is one problem.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { problems, .. } => problems.iter().map(|p| p.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw: what serde reads.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    tokens_file: Option<String>,
    server: RawServer,
    identity: RawIdentity,
    defaults: RawDefaults,
    plans: BTreeMap<String, RawPlan>,
    tokens: BTreeMap<String, String>,
    rules: Vec<RawRule>,
    store: RawStore,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    watch_interval: Option<String>,
    shutdown_timeout: Option<String>,
    tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawIdentity {
    sources: Option<Vec<String>>,
    missing: Option<String>,
    max_token_length: Option<i64>,
    hash_key: Option<String>,
    hash_key_file: Option<String>,
    plan_header: Option<String>,
    allow_ips: Vec<String>,
    client_ip: RawClientIp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawClientIp {
    depth: Option<i64>,
    excluded: Option<Vec<String>>,
    ipv6_prefix: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDefaults {
    plan: Option<String>,
    unknown_tokens: Option<String>,
    anonymous_plan: Option<String>,
    count_denied: bool,
    dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPlan {
    limits: Vec<RawLimit>,
    unlimited: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLimit {
    name: Option<String>,
    requests: Option<i64>,
    per: Option<String>,
    algorithm: Option<String>,
    average: Option<i64>,
    period: Option<String>,
    burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRule {
    name: Option<String>,
    host: Option<String>,
    path_prefix: Option<String>,
    path: Option<String>,
    methods: Vec<String>,
    exempt: bool,
    dry_run: bool,
    limits: BTreeMap<String, Vec<RawLimit>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawStore {
    kind: Option<String>,
    max_keys: Option<i64>,
    memory: RawMemory,
    redis: Option<RawRedis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawMemory {
    snapshot: Option<RawSnapshot>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSnapshot {
    path: Option<String>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRedis {
    url: Option<String>,
    cluster: Option<Vec<String>>,
    password_file: Option<String>,
    password_env: Option<String>,
    prefix: Option<String>,
    connect_timeout: Option<String>,
    command_timeout: Option<String>,
    on_error: Option<String>,
    breaker_threshold: Option<i64>,
    breaker_reattempt: Option<String>,
    local: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTokensFile {
    tokens: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------------
// Validated.

/// Listener and process settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub listen: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` go instead of `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// How often the config file is checked for changes; `None` watches only SIGHUP.
    pub watch_interval: Option<Duration>,
    /// How long shutdown waits for in-flight checks.
    pub shutdown_timeout: Duration,
    /// `[server.tls]`: the files the check listener's TLS is read from. Their content is in
    /// [`Config::tls`], which a reload replaces (so rotated certificates apply without a
    /// restart); turning TLS on or off needs a restart.
    pub tls: Option<TlsFiles>,
}

/// `[server.tls]`: PEM files, resolved against the config's folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Where counters live.
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
    /// The check listener's TLS settings, built from the files in `server.tls` when the config
    /// was read: certificates and key parsed and matched, ALPN `h2` then `http/1.1`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Config {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: origin.clone(), source })?;
        Config::parse(&text, &origin, path.parent())
    }

    /// The embedded default config.
    pub fn embedded() -> Config {
        Config::parse(DEFAULT_CONFIG, "<embedded default>", None).expect("the embedded config is valid")
    }

    /// Validates config text. `dir` resolves relative paths (tokens and key files).
    pub fn parse(text: &str, origin: &str, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::new(text);
        let raw: RawConfig =
            serde_ignored::deserialize(de, |path| unknown.push(path.to_string())).map_err(|e| {
                ConfigError::Syntax { path: origin.to_owned(), message: syntax_message(text, &e) }
            })?;
        let mut v = Validator { problems: Vec::new(), dir: dir.map(Path::to_path_buf), files: Vec::new() };
        for key in unknown {
            // serde_ignored writes `?` for the `Some` of an optional table: `server.tls.?.x`.
            v.problem(key.replace(".?", ""), "unknown key");
        }
        let config = v.config(raw, origin);
        match config {
            Some(c) if v.problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid { path: origin.to_owned(), problems: v.problems }),
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
        let admin = self.server.admin_listen.map(|a| format!(", admin {a}")).unwrap_or_default();
        format!(
            "{}: {} plans ({}), {} rules ({}), {} tokens, default plan {}, store {}, listen {}{}",
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
        )
    }
}

/// What is wrong with a PEM file, without quoting any of it (a key file's lines are secret).
fn pem_problem(path: &Path, what: &str, e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    let why = match e {
        Error::Io(e) => return format!("cannot read {}: {e}", path.display()),
        Error::NoItemsFound => format!("no PEM {what} found"),
        Error::MissingSectionEnd { .. } => "a PEM section has no END line".to_owned(),
        Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
        Error::Base64Decode(_) => "a PEM section is not valid base64".to_owned(),
        Error::SectionTooLarge => "a PEM section is too large".to_owned(),
        _ => "not a valid PEM file".to_owned(),
    };
    format!("{}: {why}", path.display())
}

/// `line 3, column 7: invalid string` without toml's quote of the line, which may hold a token.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

struct Validator {
    problems: Vec<Problem>,
    dir: Option<PathBuf>,
    files: Vec<PathBuf>,
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// A key path segment for a table key: bare if it is a bare TOML key, quoted otherwise.
fn segment(name: &str) -> String {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        name.to_owned()
    } else {
        quoted(name)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

const NAME_RULE: &str = "letters, digits, '_', '-' or '.', at most 64";

impl Validator {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { key: key.into(), message: message.into() });
    }

    fn resolve(&self, path: &str) -> PathBuf {
        match &self.dir {
            Some(dir) if Path::new(path).is_relative() => dir.join(path),
            _ => PathBuf::from(path),
        }
    }

    fn duration(&mut self, key: &str, value: &str) -> Option<Duration> {
        match humantime::parse_duration(value) {
            Ok(d) => Some(d),
            Err(_) => {
                self.problem(
                    key,
                    format!("invalid duration {} (expected e.g. \"30s\", \"1m\", \"2h\")", quoted(value)),
                );
                None
            }
        }
    }

    fn addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    key,
                    format!("invalid address {} (expected IP:PORT, e.g. \"0.0.0.0:8080\")", quoted(value)),
                );
                None
            }
        }
    }

    fn net(&mut self, key: String, value: &str) -> Option<IpNet> {
        let parsed =
            value.parse::<IpNet>().ok().or_else(|| value.parse::<std::net::IpAddr>().ok().map(IpNet::from));
        if parsed.is_none() {
            self.problem(
                key,
                format!("invalid network {} (expected an IP or CIDR, e.g. \"10.0.0.0/8\")", quoted(value)),
            );
        }
        parsed
    }

    fn config(&mut self, raw: RawConfig, origin: &str) -> Option<Config> {
        if self.dir.is_some() {
            self.files.push(PathBuf::from(origin));
        }
        let (server, tls) = self.server(raw.server);
        let (identity, extras) = self.identity(raw.identity);
        let store = self.store(raw.store);
        let mut tokens = raw.tokens;
        if let Some(file) = &raw.tokens_file {
            self.tokens_file(file, &mut tokens);
        }
        let policy = self.policy(raw.plans, tokens, raw.rules, raw.defaults, extras, identity.as_ref());
        Some(Config {
            origin: origin.to_owned(),
            files: std::mem::take(&mut self.files),
            server: server?,
            identity: identity?,
            policy: policy?,
            store: store?,
            tls,
        })
    }

    fn server(&mut self, raw: RawServer) -> (Option<Server>, Option<Arc<rustls::ServerConfig>>) {
        let listen = self.addr("server.listen", raw.listen.as_deref().unwrap_or("0.0.0.0:8080"));
        let admin_listen = match &raw.admin_listen {
            Some(a) => match self.addr("server.admin_listen", a) {
                Some(a) => Some(a),
                None => return (None, None),
            },
            None => None,
        };
        let watch = self.duration("server.watch_interval", raw.watch_interval.as_deref().unwrap_or("2s"));
        let shutdown =
            self.duration("server.shutdown_timeout", raw.shutdown_timeout.as_deref().unwrap_or("10s"));
        if let (Some(l), Some(a)) = (listen, admin_listen) {
            if l == a {
                self.problem("server.admin_listen", format!("must differ from server.listen (both {l})"));
            }
        }
        let (tls_files, tls) = match raw.tls {
            Some(raw) => {
                if admin_listen.is_none() {
                    // `quotagate healthcheck` speaks plain HTTP, holds no client certificate,
                    // and a scrape of /metrics should not need Traefik's either.
                    self.problem(
                        "server.admin_listen",
                        "required when server.tls is set: /healthz (quotagate healthcheck), /readyz and /metrics stay plain HTTP there (e.g. \"0.0.0.0:8081\")",
                    );
                }
                match self.tls(raw) {
                    Some((files, config)) => (Some(files), Some(config)),
                    None => (None, None),
                }
            }
            None => (None, None),
        };
        let server = (|| {
            Some(Server {
                listen: listen?,
                admin_listen,
                watch_interval: Some(watch?).filter(|d| !d.is_zero()),
                shutdown_timeout: shutdown?,
                tls: tls_files,
            })
        })();
        (server, tls)
    }

    /// `[server.tls]`: reads the PEM files and builds the listener's TLS settings. Messages
    /// name the file and what is wrong with it, never its content.
    fn tls(&mut self, raw: RawTls) -> Option<(TlsFiles, Arc<rustls::ServerConfig>)> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let mut path = |key: &str, value: Option<String>, what: &str| match value {
            Some(v) => Some(self.resolve(&v)),
            None => {
                self.problem(key, format!("missing (path to {what})"));
                None
            }
        };
        let cert_path = path("server.tls.cert", raw.cert, "a PEM certificate chain, leaf first");
        let key_path = path("server.tls.key", raw.key, "the PEM private key of the certificate");
        let ca_path = raw.client_ca.map(|ca| self.resolve(&ca));

        let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| pem_problem(path, "certificate", e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_problem(path, "certificate", e))?;
            if certs.is_empty() {
                return Err(pem_problem(path, "certificate", rustls::pki_types::pem::Error::NoItemsFound));
            }
            Ok(certs)
        };
        let chain = cert_path.as_deref().and_then(|p| match certs(p) {
            Ok(c) => Some(c),
            Err(msg) => {
                self.problem("server.tls.cert", msg);
                None
            }
        });
        let key = key_path.as_deref().and_then(|p| match PrivateKeyDer::from_pem_file(p) {
            Ok(k) => Some(k),
            Err(e) => {
                self.problem("server.tls.key", pem_problem(p, "private key", e));
                None
            }
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = match &ca_path {
            None => None,
            Some(p) => {
                let roots = certs(p).and_then(|cas| {
                    let mut roots = rustls::RootCertStore::empty();
                    for ca in cas {
                        roots
                            .add(ca)
                            .map_err(|e| format!("{}: not a usable CA certificate ({e})", p.display()))?;
                    }
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| format!("{}: cannot verify clients with it ({e})", p.display()))
                });
                match roots {
                    Ok(v) => Some(v),
                    Err(msg) => {
                        self.problem("server.tls.client_ca", msg);
                        return None;
                    }
                }
            }
        };
        let (cert_path, key_path, chain, key) = (cert_path?, key_path?, chain?, key?);
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions");
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = match builder.with_single_cert(chain, key) {
            Ok(c) => c,
            Err(e) => {
                let msg = match e {
                    rustls::Error::InconsistentKeys(_) => format!(
                        "the key in {} does not belong to the certificate in {}",
                        key_path.display(),
                        cert_path.display()
                    ),
                    other => {
                        format!("cannot use {} with {}: {other}", cert_path.display(), key_path.display())
                    }
                };
                self.problem("server.tls", msg);
                return None;
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self.files.extend([cert_path.clone(), key_path.clone()]);
        self.files.extend(ca_path.clone());
        Some((TlsFiles { cert: cert_path, key: key_path, client_ca: ca_path }, Arc::new(config)))
    }

    fn identity(&mut self, raw: RawIdentity) -> (Option<Identity>, Extras) {
        let default_sources = ["bearer", "token", "header:X-API-Key"];
        let raw_sources: Vec<String> =
            raw.sources.unwrap_or_else(|| default_sources.iter().map(|s| s.to_string()).collect());
        let mut sources = Vec::new();
        for (i, s) in raw_sources.iter().enumerate() {
            match Source::parse(s) {
                Some(src) if sources.contains(&src) => {
                    self.problem(format!("identity.sources[{i}]"), format!("{} is listed twice", quoted(s)))
                }
                Some(src) => sources.push(src),
                None => self.problem(
                    format!("identity.sources[{i}]"),
                    format!(
                        "unknown source {} (expected \"bearer\", \"token\", \"header:NAME\", \"query:NAME\", \"cookie:NAME\" or \"host\")",
                        quoted(s)
                    ),
                ),
            }
        }
        let missing = match raw.missing.as_deref().unwrap_or("reject") {
            "reject" => Some(Missing::Reject),
            "ip" => Some(Missing::Ip),
            other => {
                let msg = format!("unknown value {} (expected \"reject\" or \"ip\")", quoted(other));
                self.problem("identity.missing", msg);
                None
            }
        };
        let max_len = raw.max_token_length.unwrap_or(256);
        if !(1..=8192).contains(&max_len) {
            self.problem("identity.max_token_length", format!("must be between 1 and 8192 (got {max_len})"));
        }
        let client_ip = self.client_ip(raw.client_ip.depth, raw.client_ip.excluded);
        let ipv6_prefix = raw.client_ip.ipv6_prefix.unwrap_or(64);
        if !(0..=128).contains(&ipv6_prefix) {
            let msg = format!("must be between 0 and 128 (got {ipv6_prefix})");
            self.problem("identity.client_ip.ipv6_prefix", msg);
        }
        let secret = self.hash_key(raw.hash_key, raw.hash_key_file);
        let plan_header = raw.plan_header.and_then(|h| match http::HeaderName::try_from(h.as_str()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.problem("identity.plan_header", format!("invalid header name {}", quoted(&h)));
                None
            }
        });
        let allow = raw
            .allow_ips
            .iter()
            .enumerate()
            .filter_map(|(i, a)| self.net(format!("identity.allow_ips[{i}]"), a))
            .collect();
        let extras = Extras { plan_header, allow, missing };
        let identity = (|| {
            Some(Identity {
                sources,
                missing: missing?,
                max_token_length: usize::try_from(max_len).ok().filter(|n| (1..=8192).contains(n))?,
                client_ip: client_ip?,
                ipv6_prefix: u8::try_from(ipv6_prefix).ok().filter(|p| *p <= 128)?,
                hasher: Hasher::new(&secret?),
            })
        })();
        (identity, extras)
    }

    /// The hashing secret: configured inline, from a file, or built in. Messages give its
    /// length only.
    fn hash_key(&mut self, inline: Option<String>, file: Option<String>) -> Option<Vec<u8>> {
        let (key, secret) = match (inline, file) {
            (Some(_), Some(_)) => {
                let msg = "set either identity.hash_key or identity.hash_key_file, not both";
                self.problem("identity.hash_key_file", msg);
                return None;
            }
            (Some(k), None) => ("identity.hash_key", k.into_bytes()),
            (None, Some(f)) => {
                let path = self.resolve(&f);
                match std::fs::read(&path) {
                    Ok(bytes) => ("identity.hash_key_file", bytes.trim_ascii().to_vec()),
                    Err(e) => {
                        self.problem(
                            "identity.hash_key_file",
                            format!("cannot read {}: {e}", path.display()),
                        );
                        return None;
                    }
                }
            }
            (None, None) => return Some(BUILTIN_HASH_KEY.to_vec()),
        };
        if secret.len() < 16 {
            self.problem(key, format!("must be at least 16 bytes long (got {} bytes)", secret.len()));
            return None;
        }
        Some(secret)
    }

    fn client_ip(&mut self, depth: Option<i64>, excluded: Option<Vec<String>>) -> Option<ClientIp> {
        match (depth, excluded) {
            (Some(_), Some(_)) => {
                let msg = "set either depth or excluded, not both (as in Traefik's ipStrategy)";
                self.problem("identity.client_ip", msg);
                None
            }
            (Some(0), None) => Some(ClientIp::Peer),
            (Some(d), None) => match usize::try_from(d).ok().and_then(NonZeroUsize::new) {
                Some(d) => Some(ClientIp::Depth(d)),
                None => {
                    let msg = format!("must be 0 (the peer address) or more (got {d})");
                    self.problem("identity.client_ip.depth", msg);
                    None
                }
            },
            (None, Some(list)) => {
                let n = list.len();
                let nets: Vec<IpNet> = list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| self.net(format!("identity.client_ip.excluded[{i}]"), a))
                    .collect();
                (nets.len() == n).then_some(ClientIp::Excluded(nets))
            }
            (None, None) => Some(ClientIp::Depth(NonZeroUsize::MIN)),
        }
    }

    fn store(&mut self, raw: RawStore) -> Option<StoreConfig> {
        let max_keys = raw.max_keys.unwrap_or(1_000_000);
        if max_keys < 1 {
            self.problem("store.max_keys", format!("must be greater than 0 (got {max_keys})"));
        }
        let snapshot = raw.memory.snapshot.and_then(|s| self.snapshot(s));
        let backend = match raw.kind.as_deref().unwrap_or("memory") {
            "memory" => {
                if raw.redis.is_some() {
                    self.problem("store.redis", "is set but store.kind is \"memory\" (set kind = \"redis\")");
                }
                Some(Backend::Memory)
            }
            "redis" => match raw.redis {
                Some(r) => self.redis(r).map(Backend::Redis),
                None => {
                    self.problem(
                        "store.redis",
                        "missing: kind = \"redis\" needs [store.redis] with url or cluster",
                    );
                    None
                }
            },
            other => {
                let msg = format!("unknown store {} (expected \"memory\" or \"redis\")", quoted(other));
                self.problem("store.kind", msg);
                None
            }
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
            self.duration(&format!("{KEY}.connect_timeout"), raw.connect_timeout.as_deref().unwrap_or("1s"));
        let command_timeout = self
            .duration(&format!("{KEY}.command_timeout"), raw.command_timeout.as_deref().unwrap_or("50ms"));
        let on_error = match raw.on_error.as_deref().unwrap_or("local") {
            "local" => Some(OnError::Local),
            "allow" => Some(OnError::Allow),
            "deny" => Some(OnError::Deny),
            other => {
                let msg =
                    format!("unknown value {} (expected \"local\", \"allow\" or \"deny\")", quoted(other));
                self.problem(format!("{KEY}.on_error"), msg);
                None
            }
        };
        let threshold = raw.breaker_threshold.unwrap_or(3);
        if !(1..=1000).contains(&threshold) {
            self.problem(
                format!("{KEY}.breaker_threshold"),
                format!("must be between 1 and 1000 (got {threshold})"),
            );
        }
        let reattempt = self
            .duration(&format!("{KEY}.breaker_reattempt"), raw.breaker_reattempt.as_deref().unwrap_or("5s"));
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

    fn tokens_file(&mut self, file: &str, tokens: &mut BTreeMap<String, String>) {
        let path = self.resolve(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => return self.problem("tokens_file", format!("cannot read {}: {e}", path.display())),
        };
        match toml::from_str::<RawTokensFile>(&text) {
            Ok(raw) => {
                tokens.extend(raw.tokens);
                self.files.push(path);
            }
            Err(e) => {
                // toml's message quotes the offending line, which may hold a token: give the
                // position only.
                let at = e.span().map(|s| format!(" at byte {}", s.start)).unwrap_or_default();
                let msg = format!(
                    "{} is not a valid tokens file{at} (expected [tokens] \"token\" = \"plan\")",
                    path.display()
                );
                self.problem("tokens_file", msg);
            }
        }
    }

    fn policy(
        &mut self,
        raw_plans: BTreeMap<String, RawPlan>,
        raw_tokens: BTreeMap<String, String>,
        raw_rules: Vec<RawRule>,
        defaults: RawDefaults,
        extras: Extras,
        identity: Option<&Identity>,
    ) -> Option<Policy> {
        let mut plans = Vec::new();
        for (name, plan) in raw_plans {
            let key = format!("plans.{}", segment(&name));
            if !valid_name(&name) {
                self.problem(&key, format!("invalid plan name {} ({NAME_RULE})", quoted(&name)));
            }
            if plan.unlimited && !plan.limits.is_empty() {
                self.problem(
                    format!("{key}.limits"),
                    "an unlimited plan has no limits (remove limits or unlimited)",
                );
            }
            if !plan.unlimited && plan.limits.is_empty() {
                self.problem(&key, "has no limits (add limits, or set unlimited = true)");
            }
            let limits = self.limits(&format!("{key}.limits"), &plan.limits, None);
            plans.push(Plan::new(name, plan.unlimited, limits));
        }
        if plans.len() > usize::from(u16::MAX) {
            self.problem("plans", format!("too many plans ({}, at most {})", plans.len(), u16::MAX));
            return None;
        }
        let known = || plans.iter().map(|p| quoted(&p.name)).collect::<Vec<_>>().join(", ");
        let find = |name: &str| plans.iter().position(|p| &*p.name == name).map(|i| PlanId(i as u16));

        let default_name = defaults.plan.as_deref().unwrap_or("free");
        let default_plan = find(default_name);
        if default_plan.is_none() {
            let msg = format!("unknown plan {} (known: {})", quoted(default_name), known());
            self.problem("defaults.plan", msg);
        }
        let unknown_tokens = match defaults.unknown_tokens.as_deref().unwrap_or("plan") {
            "plan" => default_plan.map(UnknownTokens::Plan),
            "reject" => Some(UnknownTokens::Reject),
            other => {
                let msg = format!("unknown value {} (expected \"plan\" or \"reject\")", quoted(other));
                self.problem("defaults.unknown_tokens", msg);
                None
            }
        };
        let anonymous_name = defaults.anonymous_plan.as_deref().unwrap_or("anonymous");
        let anonymous = match find(anonymous_name) {
            Some(p) => Some(p),
            None if defaults.anonymous_plan.is_some() => {
                let msg = format!("unknown plan {} (known: {})", quoted(anonymous_name), known());
                self.problem("defaults.anonymous_plan", msg);
                None
            }
            None if extras.missing == Some(Missing::Ip) => {
                let msg = format!(
                    "\"ip\" limits callers without a token under plan {}, which is not defined (known: {})",
                    quoted(anonymous_name),
                    known()
                );
                self.problem("identity.missing", msg);
                None
            }
            // Callers without a token are rejected, so no caller gets this plan.
            None => default_plan,
        };

        let mut tokens = HashMap::default();
        if let Some(identity) = identity {
            for (token, plan) in &raw_tokens {
                let hash = identity.hasher.token(token.as_bytes());
                let key = format!("tokens[fingerprint {}]", hash.fingerprint());
                let presentable = !token.is_empty()
                    && token.len() <= identity.max_token_length
                    && token.bytes().all(|b| (0x21..=0x7e).contains(&b));
                if !presentable {
                    let msg = format!(
                        "a token must be 1 to {} visible ASCII characters (this one could never be presented)",
                        identity.max_token_length
                    );
                    self.problem(&key, msg);
                }
                match find(plan) {
                    Some(p) => {
                        tokens.insert(hash, p);
                    }
                    None => self.problem(&key, format!("unknown plan {} (known: {})", quoted(plan), known())),
                }
            }
        }

        let mut rules: Vec<Rule> = Vec::new();
        for (i, raw) in raw_rules.into_iter().enumerate() {
            if let Some(rule) = self.rule(i, raw, &plans, &rules) {
                rules.push(rule);
            }
        }

        Some(Policy {
            tokens,
            unknown_tokens: unknown_tokens?,
            anonymous: anonymous?,
            default_plan: default_plan?,
            plan_header: extras.plan_header,
            rules,
            allow: extras.allow,
            count_denied: defaults.count_denied,
            dry_run: defaults.dry_run,
            plans,
        })
    }

    fn rule(&mut self, i: usize, raw: RawRule, plans: &[Plan], earlier: &[Rule]) -> Option<Rule> {
        let key = format!("rules[{i}]");
        let name = match raw.name {
            Some(n) if valid_name(&n) => n,
            Some(n) => {
                self.problem(
                    format!("{key}.name"),
                    format!("invalid rule name {} ({NAME_RULE})", quoted(&n)),
                );
                return None;
            }
            None => {
                self.problem(
                    format!("{key}.name"),
                    "missing (every rule needs a name: its counters are kept under it)",
                );
                return None;
            }
        };
        if earlier.iter().any(|r| *r.name == *name) {
            self.problem(format!("{key}.name"), format!("{} is used by an earlier rule", quoted(&name)));
        }
        let host = match raw.host {
            None => HostMatch::Any,
            Some(h) if h.contains(['*', '?', '[']) => match Glob::new(&h.to_ascii_lowercase()) {
                Ok(g) => HostMatch::Glob(g.compile_matcher()),
                Err(e) => {
                    self.problem(
                        format!("{key}.host"),
                        format!("invalid pattern {}: {}", quoted(&h), e.kind()),
                    );
                    HostMatch::Any
                }
            },
            Some(h) => HostMatch::Exact(h.to_ascii_lowercase()),
        };
        let path = match (raw.path_prefix, raw.path) {
            (Some(_), Some(_)) => {
                self.problem(&key, "set either path_prefix or path, not both");
                PathMatch::Any
            }
            (Some(p), None) if !p.starts_with('/') => {
                self.problem(
                    format!("{key}.path_prefix"),
                    format!("must start with '/' (got {})", quoted(&p)),
                );
                PathMatch::Any
            }
            (Some(p), None) => PathMatch::Prefix(p),
            (None, Some(p)) if !p.starts_with('/') => {
                self.problem(format!("{key}.path"), format!("must start with '/' (got {})", quoted(&p)));
                PathMatch::Any
            }
            (None, Some(p)) => match GlobBuilder::new(&p).literal_separator(true).build() {
                Ok(g) => PathMatch::Glob(g.compile_matcher()),
                Err(e) => {
                    self.problem(
                        format!("{key}.path"),
                        format!("invalid pattern {}: {}", quoted(&p), e.kind()),
                    );
                    PathMatch::Any
                }
            },
            (None, None) => PathMatch::Any,
        };
        let mut methods = Vec::new();
        for (j, m) in raw.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                self.problem(format!("{key}.methods[{j}]"), format!("invalid method {}", quoted(m)));
            } else {
                methods.push(m.to_ascii_uppercase());
            }
        }
        if raw.exempt && !raw.limits.is_empty() {
            self.problem(format!("{key}.limits"), "an exempt rule has no limits (remove limits or exempt)");
        }
        if !raw.exempt && raw.limits.is_empty() {
            self.problem(&key, "has no limits (add limits.<plan> = [...], or exempt = true)");
        }
        let mut per_plan = vec![None; plans.len()];
        let mut any_plan = Vec::new();
        for (plan, limits) in &raw.limits {
            let lkey = format!("{key}.limits.{}", segment(plan));
            let parsed = self.limits(&lkey, limits, Some(&name));
            if plan == "*" {
                any_plan = parsed;
            } else if let Some(p) = plans.iter().position(|p| *p.name == **plan) {
                per_plan[p] = Some(parsed);
            } else {
                let known = plans.iter().map(|p| quoted(&p.name)).collect::<Vec<_>>().join(", ");
                self.problem(
                    lkey,
                    format!("unknown plan {} (known: {known}, or \"*\" for any plan)", quoted(plan)),
                );
            }
        }
        Some(Rule {
            scope: rule_scope(&name),
            name: name.into(),
            host,
            path,
            methods,
            exempt: raw.exempt,
            dry_run: raw.dry_run,
            per_plan,
            any_plan,
        })
    }

    /// Validates a list of limits; `rule` prefixes default names (`summarize.minute`).
    fn limits(&mut self, key: &str, raw: &[RawLimit], rule: Option<&str>) -> Vec<Limit> {
        let mut out: Vec<Limit> = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let lkey = format!("{key}[{i}]");
            let Some(limit) = self.limit(&lkey, l, rule) else { continue };
            if let Some(other) = out.iter().find(|o| o.id == limit.id) {
                let msg =
                    format!("has the same window as limit {} in this list (merge them)", quoted(&other.name));
                self.problem(&lkey, msg);
            } else if out.iter().any(|o| o.name == limit.name) {
                let msg = format!("{} is used by another limit in this list", quoted(&limit.name));
                self.problem(format!("{lkey}.name"), msg);
            } else {
                out.push(limit);
            }
        }
        if out.len() > 32 {
            self.problem(key, format!("too many limits ({}, at most 32)", out.len()));
        }
        out
    }

    fn limit(&mut self, key: &str, raw: &RawLimit, rule: Option<&str>) -> Option<Limit> {
        const SHAPES: &str =
            "a limit is { requests, per } (with algorithm = \"fixed\" or \"sliding\") or { average, period, burst }";
        let windowed = raw.requests.is_some() || raw.per.is_some() || raw.algorithm.is_some();
        let bucket = raw.average.is_some() || raw.period.is_some() || raw.burst.is_some();
        let algorithm = match (windowed, bucket) {
            (true, true) => {
                self.problem(key, format!("mixes window keys and bucket keys ({SHAPES})"));
                return None;
            }
            (false, false) => {
                self.problem(key, format!("is empty ({SHAPES})"));
                return None;
            }
            (true, false) => self.windowed(key, raw)?,
            (false, true) => self.bucket(key, raw)?,
        };
        let default_name = match algorithm {
            Algorithm::Fixed { window, .. } | Algorithm::Sliding { window, .. } => window.name(),
            Algorithm::Gcra { .. } => "bucket".to_owned(),
        };
        let name = match &raw.name {
            Some(n) if valid_name(n) => n.clone(),
            Some(n) => {
                self.problem(
                    format!("{key}.name"),
                    format!("invalid limit name {} ({NAME_RULE})", quoted(n)),
                );
                return None;
            }
            None => match rule {
                Some(r) => format!("{r}.{default_name}"),
                None => default_name,
            },
        };
        Some(Limit::new(name, algorithm))
    }

    fn count(&mut self, key: String, value: i64) -> Option<NonZeroU32> {
        if value <= 0 {
            self.problem(key, format!("must be greater than 0 (got {value})"));
            None
        } else if value > i64::from(u32::MAX) {
            self.problem(key, format!("must be at most {} (got {value})", u32::MAX));
            None
        } else {
            NonZeroU32::new(value as u32)
        }
    }

    fn windowed(&mut self, key: &str, raw: &RawLimit) -> Option<Algorithm> {
        let requests = match raw.requests {
            Some(r) => self.count(format!("{key}.requests"), r),
            None => {
                self.problem(format!("{key}.requests"), "missing (how many requests per window)");
                None
            }
        };
        let window = match raw.per.as_deref() {
            Some(p) => {
                let w = Window::parse(p);
                if w.is_none() {
                    let msg = format!(
                        "unknown window {} (expected second, minute, hour, day, week, month or whole seconds like \"15m\")",
                        quoted(p)
                    );
                    self.problem(format!("{key}.per"), msg);
                }
                w
            }
            None => {
                self.problem(
                    format!("{key}.per"),
                    "missing (second, minute, hour, day, week, month or a duration)",
                );
                None
            }
        };
        let sliding = match raw.algorithm.as_deref().unwrap_or("fixed") {
            "fixed" => Some(false),
            "sliding" => Some(true),
            other => {
                let msg = format!("unknown algorithm {} (expected \"fixed\" or \"sliding\")", quoted(other));
                self.problem(format!("{key}.algorithm"), msg);
                None
            }
        };
        let (requests, window) = (requests?, window?);
        Some(if sliding? {
            Algorithm::Sliding { requests, window }
        } else {
            Algorithm::Fixed { requests, window }
        })
    }

    fn bucket(&mut self, key: &str, raw: &RawLimit) -> Option<Algorithm> {
        let average = match raw.average {
            Some(a) => self.count(format!("{key}.average"), a),
            None => {
                self.problem(
                    format!("{key}.average"),
                    "missing (requests per period; for no limit use unlimited = true)",
                );
                None
            }
        };
        // Traefik's defaults: period 1s, burst 1.
        let period = self.duration(&format!("{key}.period"), raw.period.as_deref().unwrap_or("1s"));
        if period.is_some_and(|p| p.is_zero()) {
            self.problem(format!("{key}.period"), "must be longer than 0s");
        }
        let burst = self.count(format!("{key}.burst"), raw.burst.unwrap_or(1));
        let (average, period, burst) = (average?, period.filter(|p| !p.is_zero())?, burst?);
        let emission = u64::try_from(period.as_nanos() / u128::from(average.get())).unwrap_or(u64::MAX);
        if emission == 0 || period.as_nanos() > u128::from(366 * 86_400 * SECOND) {
            self.problem(key, "period / average must lie between 1ns and a year");
            return None;
        }
        Some(Algorithm::Gcra { emission, burst })
    }
}

/// Parts of `[identity]` that the policy uses.
struct Extras {
    plan_header: Option<http::HeaderName>,
    allow: Vec<IpNet>,
    missing: Option<Missing>,
}

/// A rule's counter scope: a stable hash of its name, never [`crate::policy::PLAN_SCOPE`].
fn rule_scope(name: &str) -> u32 {
    let h = blake3::hash(name.as_bytes());
    u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes")).max(1)
}

//! `[server]` and `[server.tls]`: listeners, reload watching, shutdown, the check listener's
//! TLS (PEM files read and matched here, so a bad file is a config problem), and where
//! backends close their tickets (`tickets_listen`, with the token of `tickets_token_file`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::raw::{RawServer, RawTls};
use super::validate::Validator;

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
    /// Bounds and timeouts of every listener's connections.
    pub connections: Connections,
    /// Where backends close their tickets (`POST /v1/tickets/close`); `None`: not served.
    /// Binds apart from `listen` and `admin_listen`.
    pub tickets_listen: Option<SocketAddr>,
    /// The BLAKE3 hash of the bearer token `POST /v1/tickets/close` requires, if any (read from
    /// `server.tickets_token_file`, trimmed, at least 16 visible ASCII bytes). The token itself
    /// is not kept; `blake3::Hash` compares in constant time.
    pub tickets_token: Option<blake3::Hash>,
}

/// Bounds and timeouts that keep slow or idle clients from holding connections (per listener).
/// The defaults suit Traefik: its HTTP/1.1 client keeps at most 2 idle connections and redials
/// (retrying a GET) when one was closed; over TLS it keeps one HTTP/2 connection, idle for at
/// most 90 s, which is shorter than `idle_timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connections {
    /// HTTP/1.1: the longest a request head may take to arrive, counted from the connection's
    /// start or the end of the previous response (so also how long an idle connection stays).
    pub header_read_timeout: Duration,
    /// HTTP/2: a connection without a request for this long is closed (GOAWAY).
    pub idle_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// TLS handshakes in flight at once; more connections are closed before theirs.
    pub max_tls_handshakes: usize,
    pub tls_handshake_timeout: Duration,
    /// HTTP/2: how often an idle connection is pinged, and how long the answer may take.
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
    /// HTTP/2: requests in flight on one connection.
    pub http2_max_concurrent_streams: u32,
}

impl Default for Connections {
    fn default() -> Connections {
        Connections {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
            max_tls_handshakes: 256,
            tls_handshake_timeout: Duration::from_secs(10),
            http2_keep_alive_interval: Duration::from_secs(20),
            http2_keep_alive_timeout: Duration::from_secs(20),
            http2_max_concurrent_streams: 1000,
        }
    }
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

/// Whether two listeners cannot both bind: the same port (not 0, which binds any free one) on
/// the same IP, or beside the unspecified address of its family (`[::]` takes IPv4 too, as
/// Linux binds it dual-stack by default).
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |any: SocketAddr, other: SocketAddr| any.ip().is_unspecified() && (any.is_ipv6() || other.is_ipv4());
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
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

impl Validator {
    pub(super) fn server(&mut self, raw: RawServer) -> (Option<Server>, Option<Arc<rustls::ServerConfig>>) {
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
            self.apart("server.admin_listen", a, "server.listen", l);
        }
        let tickets_listen =
            raw.tickets_listen.as_deref().and_then(|t| self.addr("server.tickets_listen", t));
        if let Some(t) = tickets_listen {
            if let Some(l) = listen {
                self.apart("server.tickets_listen", t, "server.listen", l);
            }
            if let Some(a) = admin_listen {
                self.apart("server.tickets_listen", t, "server.admin_listen", a);
            }
        }
        let tickets_token = match raw.tickets_token_file.as_deref() {
            Some(_) if raw.tickets_listen.is_none() => {
                self.problem("server.tickets_token_file", "set server.tickets_listen too");
                None
            }
            Some(file) => self.bearer_token_file("server.tickets_token_file", file, "backends"),
            None => None,
        };
        let connections = self.connections(&raw);
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
                connections: connections?,
                tickets_listen,
                tickets_token,
            })
        })();
        (server, tls)
    }

    /// Records a problem at `key` if listener `addr` cannot bind beside `other` (at
    /// `other_key`): see [`clash`].
    fn apart(&mut self, key: &str, addr: SocketAddr, other_key: &str, other: SocketAddr) {
        if !clash(addr, other) {
            return;
        }
        let msg = if addr == other {
            format!("must differ from {other_key} (both {addr})")
        } else {
            format!("must differ from {other_key} ({addr} and {other} both take port {})", addr.port())
        };
        self.problem(key, msg);
    }

    /// The connection bounds and timeouts of `[server]`; see [`Connections`].
    fn connections(&mut self, raw: &RawServer) -> Option<Connections> {
        let d = Connections::default();
        let mut timeout = |key: &str, value: &Option<String>, default: Duration| match value {
            None => Some(default),
            Some(v) => match self.duration(format!("server.{key}"), v)? {
                zero if zero.is_zero() => {
                    self.problem(format!("server.{key}"), "must be greater than 0s (got \"0s\")");
                    None
                }
                positive => Some(positive),
            },
        };
        let header_read_timeout =
            timeout("header_read_timeout", &raw.header_read_timeout, d.header_read_timeout);
        let idle_timeout = timeout("idle_timeout", &raw.idle_timeout, d.idle_timeout);
        let tls_handshake_timeout =
            timeout("tls_handshake_timeout", &raw.tls_handshake_timeout, d.tls_handshake_timeout);
        let http2_keep_alive_interval =
            timeout("http2_keep_alive_interval", &raw.http2_keep_alive_interval, d.http2_keep_alive_interval);
        let http2_keep_alive_timeout =
            timeout("http2_keep_alive_timeout", &raw.http2_keep_alive_timeout, d.http2_keep_alive_timeout);
        let mut bounded = |key: &str, value: Option<i64>, default: u32, max: u32| match value {
            None => Some(default),
            Some(v) if (1..=i64::from(max)).contains(&v) => u32::try_from(v).ok(),
            Some(v) => {
                self.problem(format!("server.{key}"), format!("must be between 1 and {max} (got {v})"));
                None
            }
        };
        let small = |n: usize| u32::try_from(n).expect("the default bounds are small");
        let max_connections =
            bounded("max_connections", raw.max_connections, small(d.max_connections), 1_000_000);
        let max_tls_handshakes =
            bounded("max_tls_handshakes", raw.max_tls_handshakes, small(d.max_tls_handshakes), 100_000);
        let http2_max_concurrent_streams = bounded(
            "http2_max_concurrent_streams",
            raw.http2_max_concurrent_streams,
            d.http2_max_concurrent_streams,
            100_000,
        );
        Some(Connections {
            header_read_timeout: header_read_timeout?,
            idle_timeout: idle_timeout?,
            max_connections: usize::try_from(max_connections?).ok()?,
            max_tls_handshakes: usize::try_from(max_tls_handshakes?).ok()?,
            tls_handshake_timeout: tls_handshake_timeout?,
            http2_keep_alive_interval: http2_keep_alive_interval?,
            http2_keep_alive_timeout: http2_keep_alive_timeout?,
            http2_max_concurrent_streams: http2_max_concurrent_streams?,
        })
    }

    /// `[server.tls]`: reads the PEM files and builds the listener's TLS settings. Messages
    /// name the file and what is wrong with it, never its content.
    pub(super) fn tls(&mut self, raw: RawTls) -> Option<(TlsFiles, Arc<rustls::ServerConfig>)> {
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
}

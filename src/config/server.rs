//! `[server]` and `[server.tls]`: listeners, reload watching, shutdown, and the check
//! listener's TLS (PEM files read and matched here, so a bad file is a config problem).

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

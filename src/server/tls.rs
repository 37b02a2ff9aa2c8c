//! TLS on the check listener (`server.tls`): rustls with ALPN `h2` then `http/1.1`. The accept
//! loop ([`super::conn`]) runs each handshake in the connection's own task, bounded in number
//! (`server.max_tls_handshakes`) and time (`server.tls_handshake_timeout`), so a slow or broken
//! client never holds up the others. A failed handshake is logged at debug level and forgotten.
//! Each handshake uses the TLS settings of the config in force, so a reload with a rotated
//! certificate applies to the next connection; connections already open keep theirs.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::AppState;

/// The listener's TLS settings.
#[derive(Clone)]
pub struct Tls {
    /// Used while the config in force has none (a reload that removed `server.tls` takes effect
    /// at the next restart, like every `server.*` change).
    initial: Arc<rustls::ServerConfig>,
}

impl Tls {
    pub fn new(initial: Arc<rustls::ServerConfig>) -> Tls {
        Tls { initial }
    }

    /// An acceptor with the settings of `state`'s current config.
    pub fn acceptor(&self, state: &AppState) -> TlsAcceptor {
        match &state.config.load().tls {
            Some(current) => TlsAcceptor::from(current.clone()),
            None => TlsAcceptor::from(self.initial.clone()),
        }
    }
}

/// The protocol a TLS client chose by ALPN: `"h2"`, `"http/1.1"` or `"none"`.
pub fn alpn(stream: &TlsStream<TcpStream>) -> &'static str {
    match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => "h2",
        Some(b"http/1.1") => "http/1.1",
        _ => "none",
    }
}

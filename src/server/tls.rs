//! The check listener with `server.tls`: TCP connections go through a TLS handshake (rustls,
//! ALPN `h2` then `http/1.1`) before `axum::serve` gets them, so the same router, graceful
//! shutdown and `ConnectInfo` serve plain and TLS listeners alike, and hyper's auto connection
//! builder speaks HTTP/2 or HTTP/1.1, whichever the client chose.
//!
//! Handshakes run in tasks of their own, bounded by [`HANDSHAKE_TIMEOUT`], so a slow or broken
//! client never holds up the accept loop. A failed handshake is logged at debug level and
//! forgotten. Each handshake uses the TLS settings of the config in force, so a reload with a
//! rotated certificate applies to the next connection; connections already open keep theirs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::AppState;

/// How long a client gets to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for `axum::serve` to take them. The accept task waits when
/// the queue is full, which leaves further connections in the kernel's backlog.
const QUEUE: usize = 256;

/// A listener whose connections are TLS streams; see the module docs.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener`; each handshake uses `state`'s current `Config::tls`.
    /// `initial` is used while a config in force has none (a reload that removed `server.tls`
    /// takes effect at the next restart, like every `server.*` change).
    pub fn new(
        listener: TcpListener,
        state: AppState,
        initial: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(QUEUE);
        let accept_task = tokio::spawn(accept(listener, state, initial, tx));
        Ok(TlsListener { ready, local, accept_task })
    }
}

impl Drop for TlsListener {
    /// `axum::serve` drops its listener when it shuts down: stop accepting then.
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ends only when aborted, which happens in `drop`.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept(
    listener: TcpListener,
    state: AppState,
    mut tls: Arc<rustls::ServerConfig>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // As axum's TCP listener does: an error about one connection is that
                // connection's; any other (EMFILE: out of file descriptors) gets a pause
                // instead of a busy loop.
                if !is_connection_error(&e) {
                    tracing::error!(error = %e, "accept failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        if let Some(current) = &state.config.load().tls {
            tls = current.clone();
        }
        let acceptor = TlsAcceptor::from(tls.clone());
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // Fails only when the server is shutting down: the connection is dropped.
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out"),
            }
        });
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// The protocol a TLS client chose by ALPN: `"h2"`, `"http/1.1"` or `"none"`.
pub fn alpn(stream: &TlsStream<TcpStream>) -> &'static str {
    match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => "h2",
        Some(b"http/1.1") => "http/1.1",
        _ => "none",
    }
}

//! Serving one listener: the accept loop, the bound on open connections and on TLS handshakes
//! in flight, and hyper's connection builders with their timeouts.
//!
//! A client that opens connections and sends nothing, or a byte at a time, must not hold a file
//! descriptor for ever: each connection is bounded by hyper's own timers (HTTP/1.1 header read
//! timeout, HTTP/2 keep-alive pings) and by an idle timeout for HTTP/2, which hyper lacks. When
//! `max_connections` are open, a new connection is accepted and closed at once, so a client
//! (Traefik) learns in a round trip that it must retry, instead of waiting in the kernel's
//! backlog. Each of these events is counted in `quotagate_connections_closed_total` and logged
//! at most once per [`NOTICE_EVERY`] per listener and reason, with the number left unlogged: a
//! flood of slow clients must not become a flood of log lines.
//!
//! The protocol is HTTP/1.1 on a plain listener, and on TLS whatever the client chose by ALPN.
//! hyper-util's auto builder is not used: it sniffs the HTTP/2 preface before any of hyper's
//! timers runs, so a client that sends nothing would never be timed out.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::tls::Tls;
use super::AppState;
use crate::config::Connections;
use crate::telemetry::CloseReason;

/// A log line about one kind of closed connection is written at most this often per listener.
pub const NOTICE_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` turns true, then stops accepting and waits for
/// the open connections to finish (each is asked to close once its in-flight request is done).
/// `name` labels metrics and logs (`"check"`, `"admin"`); with `tls`, every connection goes
/// through a TLS handshake first.
pub async fn serve(
    listener: TcpListener,
    name: &'static str,
    router: Router,
    tls: Option<Tls>,
    state: AppState,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let limits = state.config.load().server.connections.clone();
    let max = limits.max_connections;
    let shared = Arc::new(Shared::new(name, router, tls, state, limits));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping(&mut stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors (EMFILE) or memory: as axum's listener does, pause
                // instead of spinning; the connections open now will end by their timeouts.
                if let Some(more) = shared.accept_errors.due() {
                    tracing::error!(listener = name, error = %e, more, "accept failed; retrying in 1s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            shared.closed(CloseReason::max_connections, peer);
            drop(tcp);
            continue;
        };
        tokio::spawn(shared.clone().connection(tcp, peer, permit, stop.clone()));
    }
    drop(listener);
    // Every open connection holds a permit: once all are back, every connection has ended.
    let all = u32::try_from(max).expect("config bounds max_connections below u32::MAX");
    let _ = shared.connections.acquire_many(all).await;
    Ok(())
}

/// Warns at start when `listeners` listeners of `max_connections` each could use more file
/// descriptors than the process may open: the bound would then never be reached, and accepting
/// would fail with "too many open files" instead (checks wait in the backlog until timeouts free
/// descriptors). Linux only: the limit is read from `/proc/self/limits`.
pub fn check_open_files_limit(limits: &Connections, listeners: usize) {
    let Some(soft) = open_files_limit() else { return };
    // Descriptors besides connections: listeners, Redis, the config watcher, snapshots, logs.
    const SPARE: u64 = 64;
    let wanted = u64::try_from(limits.max_connections * listeners).unwrap_or(u64::MAX).saturating_add(SPARE);
    if wanted > soft {
        tracing::warn!(
            max_connections = limits.max_connections,
            listeners,
            open_files_limit = soft,
            "server.max_connections is above what the open-files limit leaves: lower it below {} or raise `ulimit -n`",
            soft.saturating_sub(SPARE) / listeners.max(1) as u64,
        );
    }
}

/// The soft limit on open files, from `/proc/self/limits` ("Max open files  1024  4096  files").
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// What the connections of one listener share.
struct Shared {
    name: &'static str,
    router: Router,
    tls: Option<Tls>,
    state: AppState,
    limits: Connections,
    connections: Arc<Semaphore>,
    handshakes: Semaphore,
    open: Gauge,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    notices: [Notice; REASONS],
    accept_errors: Notice,
}

/// One [`Notice`] per [`CloseReason`], indexed by the reason.
const REASONS: usize = 6;
const _: () = assert!(CloseReason::keep_alive_timeout as usize + 1 == REASONS, "REASONS counts every reason");

impl Shared {
    fn new(
        name: &'static str,
        router: Router,
        tls: Option<Tls>,
        state: AppState,
        limits: Connections,
    ) -> Shared {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        // hyper starts this timer when the connection opens and again when a response has been
        // written, so it bounds an idle keep-alive connection as well as a slow request head.
        http1.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.http2_keep_alive_interval)
            .keep_alive_timeout(limits.http2_keep_alive_timeout)
            .max_concurrent_streams(limits.http2_max_concurrent_streams);
        Shared {
            name,
            router,
            tls,
            open: state.metrics.connections_open(name),
            state,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            handshakes: Semaphore::new(limits.max_tls_handshakes),
            limits,
            http1,
            http2,
            notices: Default::default(),
            accept_errors: Notice::default(),
        }
    }

    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        mut stop: watch::Receiver<bool>,
    ) {
        let _open = Open::new(&self.open, permit);
        let check = self.name == "check";
        let Some(tls) = &self.tls else {
            if check {
                self.state.metrics.connection_accepted("plain", "none");
            }
            return self.http1(tcp, peer, stop).await;
        };
        let Ok(handshake) = self.handshakes.try_acquire() else {
            return self.closed(CloseReason::max_tls_handshakes, peer);
        };
        let accept = tls.acceptor(&self.state).accept(tcp);
        let stream = tokio::select! {
            accepted = tokio::time::timeout(self.limits.tls_handshake_timeout, accept) => match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return self.closed(CloseReason::tls_handshake_timeout, peer),
            },
            () = stopping(&mut stop) => return,
        };
        drop(handshake);
        let alpn = super::tls::alpn(&stream);
        if check {
            self.state.metrics.connection_accepted("tls", alpn);
        }
        if alpn == "h2" {
            self.http2(stream, peer, stop).await
        } else {
            self.http1(stream, peer, stop).await
        }
    }

    async fn http1<I>(&self, io: I, peer: SocketAddr, stop: watch::Receiver<bool>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked { io, activity: activity.clone() });
        let conn = self.http1.serve_connection(io, self.service(peer, activity.clone()));
        let (result, _) = drive(conn, None, stop).await;
        if let Err(e) = result {
            if e.is_timeout() {
                // One timer covers both: tell an idle connection from a slow request.
                let reason = if activity.read_since_response.load(Ordering::Acquire) {
                    CloseReason::header_read_timeout
                } else {
                    CloseReason::idle_timeout
                };
                self.closed(reason, peer);
            } else {
                tracing::debug!(%peer, error = %e, "HTTP/1.1 connection ended with an error");
            }
        }
    }

    async fn http2<I>(&self, io: I, peer: SocketAddr, stop: watch::Receiver<bool>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let conn = self.http2.serve_connection(TokioIo::new(io), self.service(peer, activity.clone()));
        let idle = Some((self.limits.idle_timeout, &*activity));
        let (result, idled) = drive(conn, idle, stop).await;
        if idled {
            self.closed(CloseReason::idle_timeout, peer);
        }
        match result {
            Err(e) if e.is_timeout() => self.closed(CloseReason::keep_alive_timeout, peer),
            Err(e) => tracing::debug!(%peer, error = %e, "HTTP/2 connection ended with an error"),
            Ok(()) => {}
        }
    }

    /// The router as a hyper service for one connection: each request carries the peer's
    /// address (`ConnectInfo`, as `axum::serve` gives it) and is tracked in `activity`.
    fn service(
        &self,
        peer: SocketAddr,
        activity: Arc<Activity>,
    ) -> impl hyper::service::Service<
        http::Request<Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send + 'static,
    > + Clone
           + Send
           + 'static {
        let router = self.router.clone();
        hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let busy = Busy::new(&activity);
            // A Router is always ready (its `poll_ready` returns `Ready`), so it may be called
            // without polling readiness first, as axum's own `serve` does.
            let call = tower_service::Service::call(&mut router.clone(), request);
            async move {
                let response = call.await;
                drop(busy);
                response
            }
        })
    }

    /// Counts and (at most once per [`NOTICE_EVERY`]) logs a connection closed for `reason`.
    fn closed(&self, reason: CloseReason, peer: SocketAddr) {
        self.state.metrics.connection_closed(self.name, reason);
        tracing::debug!(listener = self.name, %peer, reason = reason.as_str(), "connection closed");
        let Some(more) = self.notices[reason as usize].due() else { return };
        let listener = self.name;
        let l = &self.limits;
        // `more`: how many were closed for the same reason since the last line.
        match reason {
            CloseReason::max_connections => tracing::warn!(
                listener, %peer, more, max_connections = l.max_connections,
                "connection limit reached: new connections are closed at once (server.max_connections)"
            ),
            CloseReason::max_tls_handshakes => tracing::warn!(
                listener, %peer, more, max_tls_handshakes = l.max_tls_handshakes,
                "too many TLS handshakes in flight: new connections are closed at once (server.max_tls_handshakes)"
            ),
            CloseReason::tls_handshake_timeout => tracing::warn!(
                listener, %peer, more, timeout = ?l.tls_handshake_timeout,
                "closed a connection whose TLS handshake did not finish in time (server.tls_handshake_timeout)"
            ),
            CloseReason::header_read_timeout => tracing::warn!(
                listener, %peer, more, timeout = ?l.header_read_timeout,
                "closed a connection whose request head did not arrive in time: a slow client (server.header_read_timeout)"
            ),
            // Closing idle connections is routine (Traefik keeps some open), not worth a warning.
            CloseReason::idle_timeout => tracing::info!(
                listener, %peer, more,
                "closed an idle connection (HTTP/1.1: server.header_read_timeout, HTTP/2: server.idle_timeout)"
            ),
            CloseReason::keep_alive_timeout => tracing::info!(
                listener, %peer, more, timeout = ?l.http2_keep_alive_timeout,
                "closed an HTTP/2 connection whose peer stopped answering pings (server.http2_keep_alive_timeout)"
            ),
        }
    }
}

/// Polls `conn` to its end. On `stop`, or once `idle` says the connection has had no request
/// for its duration, asks it to close gracefully (HTTP/2: GOAWAY, then in-flight streams
/// finish). Returns the connection's result and whether the idle timeout closed it.
async fn drive<C: GracefulConnection>(
    conn: C,
    idle: Option<(Duration, &Activity)>,
    mut stop: watch::Receiver<bool>,
) -> (Result<(), C::Error>, bool) {
    tokio::pin!(conn);
    let idle_timeout = idle.map(|(d, _)| d);
    let idle = async {
        match idle {
            Some((timeout, activity)) => activity.idle_for(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(idle);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => return (result, false),
            () = &mut idle, if !closing => {
                conn.as_mut().graceful_shutdown();
                // A peer that never finishes its handshake does not notice a GOAWAY: give
                // in-flight requests one more idle period, then drop the connection.
                let drain = idle_timeout.expect("the idle branch runs only with a timeout");
                let result = tokio::time::timeout(drain, conn.as_mut()).await.unwrap_or(Ok(()));
                return (result, true);
            }
            () = stopping(&mut stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection's requests and reads have been doing, for the HTTP/2 idle timeout and to
/// tell an idle HTTP/1.1 connection from a slow one.
struct Activity {
    /// Requests being answered.
    busy: AtomicUsize,
    /// When a request last started or ended (or the connection opened).
    last: Mutex<Instant>,
    /// Whether bytes arrived since the last response was produced.
    read_since_response: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            busy: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
            read_since_response: AtomicBool::new(false),
        }
    }

    /// Completes once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let since = self.last.lock().elapsed();
            if since >= timeout && self.busy.load(Ordering::Acquire) == 0 {
                return;
            }
            // Busy past the timeout: look again one period later.
            tokio::time::sleep(timeout.checked_sub(since).filter(|d| !d.is_zero()).unwrap_or(timeout)).await;
        }
    }
}

/// One request in flight on a connection; dropped when its response is ready.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Busy {
        *activity.last.lock() = Instant::now();
        activity.busy.fetch_add(1, Ordering::AcqRel);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // `last` before `busy`, so `idle_for` never sees no request with a stale `last`.
        *self.0.last.lock() = Instant::now();
        self.0.read_since_response.store(false, Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An IO that notes in [`Activity::read_since_response`] that bytes arrived.
struct Tracked<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_since_response.store(true, Ordering::Release);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// An open connection: its slot under `max_connections` and its share of the gauge.
struct Open<'a> {
    gauge: &'a Gauge,
    _permit: OwnedSemaphorePermit,
}

impl<'a> Open<'a> {
    fn new(gauge: &'a Gauge, permit: OwnedSemaphorePermit) -> Open<'a> {
        gauge.inc();
        Open { gauge, _permit: permit }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Rate limit for one kind of log line.
#[derive(Default)]
struct Notice(Mutex<(Option<Instant>, u64)>);

impl Notice {
    /// `Some(n)` if a line is due now, `n` being how many occurrences went unlogged since the
    /// last one; `None` (and one more unlogged) otherwise.
    fn due(&self) -> Option<u64> {
        let mut state = self.0.lock();
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < NOTICE_EVERY => {
                state.1 += 1;
                None
            }
            _ => {
                state.0 = Some(now);
                Some(std::mem::take(&mut state.1))
            }
        }
    }
}

/// Completes once `stop` is true (or its sender is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not in the caller's future.
    let _ = stop.wait_for(|s| *s).await;
}

fn is_connection_error(e: &io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_due_once_per_period_and_counts_what_it_held_back() {
        let notice = Notice::default();
        assert_eq!(notice.due(), Some(0));
        assert_eq!(notice.due(), None);
        assert_eq!(notice.due(), None);
        // Pretend the last line is older than the period.
        notice.0.lock().0 = Some(Instant::now() - NOTICE_EVERY);
        assert_eq!(notice.due(), Some(2));
        assert_eq!(notice.due(), None);
    }
}

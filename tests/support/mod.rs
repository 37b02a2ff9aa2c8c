//! Support for the black-box tests in `tests/*.rs`, which include it with `mod support;`.
//!
//! It owns the moving parts of an end-to-end test: ports on 127.0.0.1 ([`free_port`], [`bind`]),
//! in-process HTTP servers ([`Server`], and [`Backend`], which records what it receives, and a
//! backend that closes its concurrency tickets: [`tickets::closing_backend`]), and
//! real processes: Traefik ([`Traefik`]), nginx as a backend whose routing is the truth
//! ([`Nginx`]), and the service under test ([`Quotagate`]), each killed
//! when its value is dropped and each printing its log when the test fails. What to assert is
//! left to the tests.
//!
//! Everything here uses real time and real sockets: do not pause tokio's clock in a test that
//! uses it. Every wait is bounded, and a failed wait panics with the log of the process.

// Each test binary compiles its own copy of this module and uses a different part of it
// (re-exports included).
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod certs;
pub mod fields;
pub mod nginx;
pub mod process;
pub mod quotagate;
pub mod raw;
pub mod redis;
pub mod spellings;
pub mod tickets;
pub mod traefik;
pub mod windows;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use tokio::sync::oneshot;

pub use backend::{Backend, Recorded};
pub use nginx::Nginx;
pub use quotagate::Quotagate;
pub use redis::{RedisCluster, RedisServer};
pub use traefik::Traefik;

/// How long a process gets to become ready before the test fails.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A port on 127.0.0.1 that was free a moment ago, for a process that must bind it itself.
///
/// The port is released before it is returned, so another process could take it first; the
/// spawners retry with a new port when that happens. A port is never handed out twice by one
/// test binary, so tests running in parallel threads do not race each other for it.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("a bound socket has an address").port();
        if HANDED_OUT.lock().expect("no test panics while holding this lock").insert(port) {
            return port;
        }
    }
    panic!("no new free port on 127.0.0.1 after 100 tries");
}

/// A listener on 127.0.0.1 with a port chosen by the kernel: no race, for in-process servers.
pub async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0")
}

/// An HTTP client for tests: no proxy from the environment (every target is on 127.0.0.1), a
/// timeout on every request, and no redirects followed, so a test sees what was answered.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client with these options builds")
}

/// The value of the series `series` (a metric name, with its labels if it has any) in
/// Prometheus text, or `None` if it is absent.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `timeout` of real time.
/// Returns `None` when time runs out.
pub async fn poll<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `test` for at most `limit` of real time; panics (failing the test) when time runs out.
pub async fn bounded<F: Future<Output = ()>>(limit: Duration, test: F) {
    tokio::time::timeout(limit, test).await.unwrap_or_else(|_| panic!("the test took over {limit:?}"));
}

/// An axum router served on 127.0.0.1 by a task of the test's runtime, until dropped.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Server {
    /// Binds a kernel-chosen port and starts serving `router` on it.
    pub async fn start(router: Router) -> Server {
        let listener = bind().await;
        let addr = listener.local_addr().expect("a bound socket has an address");
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(async move {
            // Graceful, not `abort()`: aborting the accept loop would leave the tasks serving
            // Traefik's keep-alive connections running until the runtime ends.
            let stop = async {
                let _ = stop.await;
            };
            let _ = axum::serve(listener, router).with_graceful_shutdown(stop).await;
        });
        Server { addr, shutdown: Some(shutdown) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    /// Stops accepting at once; idle connections are closed and in-flight requests finish.
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

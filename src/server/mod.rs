//! The HTTP side: axum routes, the forwardAuth handler ([`check`]), the ticket close endpoint
//! ([`tickets`]), responses ([`response`], the only place that knows statuses and headers),
//! config reload ([`reload`]), connections with their bounds and timeouts ([`conn`], TLS in
//! [`tls`]) and graceful shutdown. Only this module imports axum.
//!
//! Up to three listeners: checks (`server.listen`), the reserved paths (`server.admin_listen`,
//! else on the check listener) and ticket closes (`server.tickets_listen`, which serves
//! nothing else but `/healthz`: it is for backends, and the check listener, which clients'
//! requests reach through Traefik, never closes a ticket).

pub mod check;
pub mod conn;
pub mod reload;
pub mod response;
pub mod tickets;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::config::{Backend, Config};
use crate::overrides::{self, Overrides};
use crate::store::snapshot::SnapshotError;
use crate::store::{self, Memory, Redis, Store};
use crate::telemetry::{Decisions, Metrics, StoreFigures};
use crate::ticket::Minter;

/// Shared state of a running service; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    /// The config in force; swapped whole on reload (see [`AppState::install`]).
    pub config: ArcSwap<Live>,
    pub store: Store,
    pub clock: Clock,
    pub metrics: Metrics,
    /// Per-token overrides of the admin API; outside the config, so a reload keeps them.
    pub overrides: Arc<Overrides>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A config in force, with what this server builds from it when it is put in force: its
/// decision counters and its ticket minter. Reads as the config.
#[derive(Debug)]
pub struct Live {
    pub config: Config,
    pub decisions: Decisions,
    /// Mints and reads tickets under the config's `identity.hash_key`.
    pub minter: Minter,
}

impl Live {
    fn new(config: Config, metrics: &Metrics) -> Live {
        let decisions = metrics.decisions(&config.policy);
        let minter = Minter::new(&config.identity.hasher);
        Live { config, decisions, minter }
    }
}

impl std::ops::Deref for Live {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl AppState {
    /// Puts `config` in force: checks that start from now on use it.
    pub fn install(&self, config: Config) {
        self.config.store(Arc::new(Live::new(config, &self.metrics)));
    }

    /// State for `config`, with its store built empty. A Redis store starts connecting in the
    /// background, so this must run inside a tokio runtime.
    pub fn new(config: Config, clock: Clock) -> AppState {
        let store = match &config.store.backend {
            Backend::Memory => Store::Memory(Memory::new(config.store.max_keys)),
            Backend::Redis(redis) => {
                let redis = Arc::new(Redis::new(redis.clone(), config.store.max_keys));
                // Checks are decided by `on_error` until the connection is up.
                tokio::spawn(redis.clone().connect());
                Store::Redis(redis)
            }
        };
        let metrics = match &store {
            Store::Memory(_) => Metrics::new().with_in_flight(),
            Store::Redis(_) => Metrics::new(),
        };
        let overrides = Arc::new(Overrides::new(match &store {
            Store::Redis(redis) => Some(redis.clone()),
            Store::Memory(_) => None,
        }));
        AppState(Arc::new(Inner {
            config: ArcSwap::from_pointee(Live::new(config, &metrics)),
            store,
            clock,
            metrics,
            overrides,
        }))
    }
}

/// The reserved paths: health, readiness and metrics.
fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The router: every path and method not reserved is a forwardAuth check. With
/// `admin = false` the reserved paths are left out (they are served on `server.admin_listen`).
pub fn router(state: AppState, admin: bool) -> Router {
    let base = if admin { admin_routes() } else { Router::new() };
    base.fallback(check::check).with_state(state)
}

/// The router for `server.admin_listen`: the reserved paths, and the admin API (which answers
/// only while the config has `[admin]`).
pub fn admin_router(state: AppState) -> Router {
    admin_routes().merge(crate::admin::routes(&state)).with_state(state)
}

/// The router for `server.tickets_listen`: `POST /v1/tickets/close` and `/healthz`, nothing
/// else (every other path is a problem+json 404).
pub fn tickets_router(state: AppState) -> Router {
    let close = post(tickets::close).fallback(|| async { response::post_only() });
    Router::new()
        .route("/v1/tickets/close", close)
        .route("/healthz", get(healthz))
        .fallback(|| async { response::no_such_endpoint() })
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.store.describe();
    if state.store.is_ready() {
        (StatusCode::OK, format!("ready: store {store}\n"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: store {store}\n"))
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (up, errors) = match &state.store {
        Store::Memory(_) => (true, 0),
        Store::Redis(r) => (r.health() == crate::store::Health::Up, r.errors()),
    };
    let figures = StoreFigures {
        live_keys: state.store.live_keys(),
        up,
        errors,
        tickets_in_flight: state.store.in_flight(state.clock.now()),
        tickets_expired: state.store.slots_ended(),
    };
    let body = state.metrics.render(figures);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

/// The listeners a server serves on.
#[derive(Debug)]
pub struct Listeners {
    /// forwardAuth checks (and the reserved paths when there is no `admin`).
    pub check: TcpListener,
    /// `/healthz`, `/readyz`, `/metrics` (`server.admin_listen`).
    pub admin: Option<TcpListener>,
    /// `POST /v1/tickets/close` (`server.tickets_listen`).
    pub tickets: Option<TcpListener>,
}

/// Serves checks, and the reserved paths and ticket closes on their listeners if given, until
/// `shutdown` completes; then lets in-flight checks and closes finish for at most `grace`.
/// Connections are bounded and timed out as `server.connections` says ([`conn`]), on each
/// listener.
pub async fn run(
    state: AppState,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let Listeners { check, admin, tickets } = listeners;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let tls = state.config.load().tls.clone().map(tls::Tls::new);
    let main = conn::serve(
        check,
        "check",
        router(state.clone(), admin.is_none()),
        tls,
        state.clone(),
        stop_rx.clone(),
    );
    let admin = admin.map(|l| {
        tokio::spawn(conn::serve(
            l,
            "admin",
            admin_router(state.clone()),
            None,
            state.clone(),
            stop_rx.clone(),
        ))
    });
    // Backends close the tickets of the checks still in flight at shutdown, so closes get the
    // same grace as checks.
    let tickets = tickets.map(|l| {
        conn::serve(l, "tickets", tickets_router(state.clone()), None, state.clone(), stop_rx.clone())
    });
    let served = async {
        let tickets = async {
            match tickets {
                Some(t) => t.await,
                None => Ok(()),
            }
        };
        let (main, tickets) = tokio::join!(main, tickets);
        main.and(tickets)
    };

    let deadline = {
        let rx = stop_rx.clone();
        async move {
            stopped(rx).await;
            tokio::time::sleep(grace).await;
        }
    };
    tokio::select! {
        r = served => r?,
        () = deadline => tracing::warn!(?grace, "shutdown grace period over; dropping open connections"),
    }
    if let Some(task) = admin {
        task.abort();
    }
    Ok(())
}

/// `quotagate healthcheck`: true if `url` (`http://host:port/path`) answers 200 within 2 s.
/// A scratch image has no curl, so this is a minimal HTTP/1.0 client.
pub async fn healthcheck(url: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("unsupported URL {url:?} (expected http://HOST:PORT/PATH)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/healthz"),
    };
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
        let status_line = String::from_utf8_lossy(&head[..n]);
        match status_line.split_whitespace().nth(1) {
            Some("200") => Ok(()),
            Some(code) => Err(format!("{url} answered {code}")),
            None => Err(format!("{url} gave no HTTP answer")),
        }
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .map_err(|_| format!("{url} did not answer within 2s"))?
}

/// Runs the service for `config` until SIGTERM or SIGINT: binds its listeners, watches `path`
/// (if any) for reloads, and shuts down gracefully. `listen_override` is the command line's
/// `--listen`, already applied to `config` and applied again to each reloaded config.
pub async fn serve(
    config: Config,
    path: Option<std::path::PathBuf>,
    listen_override: Option<SocketAddr>,
    clock: Clock,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listen = config.server.listen;
    let admin_addr = config.server.admin_listen;
    let grace = config.server.shutdown_timeout;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let tickets_addr = config.server.tickets_listen;
    let admin = bind(admin_addr).await?;
    let tickets = bind(tickets_addr).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %listener.local_addr()?,
        admin = ?admin_addr,
        tickets = ?tickets_addr,
        summary = %config.summary(),
        "quotagate started"
    );
    let listeners = 1 + usize::from(admin.is_some()) + usize::from(tickets.is_some());
    conn::check_open_files_limit(&config.server.connections, listeners);
    let state = AppState::new(config, clock);
    let keeper = snapshots(&state);
    tokio::spawn(overrides::follow(state.overrides.clone(), state.clock.clone()));
    if let Some(path) = path {
        tokio::spawn(reload::watch(state.clone(), path, listen_override));
    }
    run(state, Listeners { check: listener, admin, tickets }, shutdown_signal(), grace).await?;
    // After `run`, so in-flight checks have finished and the last snapshot holds them all.
    if let Some((stop, task)) = keeper {
        let _ = stop.send(());
        if let Err(e) = task.await {
            tracing::error!(error = %e, "the snapshot task failed");
        }
    }
    tracing::info!("quotagate stopped");
    Ok(())
}

/// A listener on `addr`, if there is one.
async fn bind(addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    use anyhow::Context as _;
    match addr {
        Some(a) => Ok(Some(TcpListener::bind(a).await.with_context(|| format!("cannot listen on {a}"))?)),
        None => Ok(None),
    }
}

/// With `store.memory.snapshot`: restores the counters from the snapshot, then starts the task
/// that keeps it up to date; send on the returned channel to have it write once more and end.
fn snapshots(state: &AppState) -> Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let config = state.config.load();
    let (Some(snapshot), Store::Memory(memory)) = (&config.store.snapshot, &state.store) else { return None };
    let key_id = config.identity.hasher.key_id();
    // Blocking file I/O on an async worker, but nothing is being served yet.
    match store::snapshot::load(memory, &snapshot.path, key_id, state.clock.now()) {
        Ok(loaded) => {
            let overrides = state.overrides.restore(loaded.overrides, state.clock.now());
            tracing::info!(path = %snapshot.path.display(), entries = loaded.entries, overrides, "snapshot loaded")
        }
        Err(SnapshotError::Missing { .. }) => {
            tracing::info!(path = %snapshot.path.display(), "no snapshot yet; counting from zero")
        }
        Err(e) => tracing::warn!(error = %e, "snapshot ignored; counting from zero"),
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(store::snapshot::keep(
        state.clone(),
        |s: &AppState| match &s.store {
            Store::Memory(m) => m,
            Store::Redis(_) => unreachable!("config refuses snapshots unless kind = \"memory\""),
        },
        |s: &AppState, now| s.overrides.records(now),
        |s: &AppState| s.config.load().identity.hasher.key_id(),
        snapshot.clone(),
        state.clock.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    Some((stop, task))
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM can be handled");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT can be handled");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight checks"),
        _ = int.recv() => tracing::info!("SIGINT: finishing in-flight checks"),
    }
}

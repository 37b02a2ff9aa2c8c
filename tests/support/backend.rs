//! [`Backend`]: an in-process HTTP server that records every request it receives, so a test can
//! assert what got through Traefik. By default it answers `200 backend ok`; with
//! [`Backend::responding`] it can stand in for an auth server too, and with [`Backend::serving`]
//! it can take its time (work, call another service) before it answers. It counts the requests
//! it holds at once, and the most it ever held ([`Backend::peak_in_flight`]).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;

use super::Server;

/// The body the default backend answers with.
pub const BACKEND_BODY: &str = "backend ok";

/// Request bodies are recorded up to this size; a larger one is answered 413.
const MAX_BODY: usize = 1 << 20;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Path and query exactly as received: `/v1/items?page=2`.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The value of header `name` (any case), if present once and valid UTF-8. Panics if the
    /// header is present more than once, which is worth a test's attention.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        assert!(values.next().is_none(), "header {name} appears more than once in {self:?}");
        Some(first.to_str().unwrap_or_else(|_| panic!("header {name} is not UTF-8 in {self:?}")))
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split_once('?').map_or(self.uri.as_str(), |(path, _)| path)
    }
}

/// A recording HTTP server on 127.0.0.1; stops when dropped.
pub struct Backend {
    server: Server,
    requests: Arc<Mutex<Vec<Recorded>>>,
    in_flight: Arc<InFlight>,
}

/// Requests between their arrival and the moment their response is ready.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl InFlight {
    fn enter(&self) {
        // SeqCst: the peak must count every request that overlapped another, whichever
        // thread served it.
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Backend {
    /// A backend that answers every request `200` with the body [`BACKEND_BODY`].
    pub async fn start() -> Backend {
        Backend::responding(|_| Response::new(Body::from(BACKEND_BODY))).await
    }

    /// A server that answers each request with `respond(&request)`, e.g. a stand-in auth server
    /// that denies some paths with 429.
    pub async fn responding<F>(respond: F) -> Backend
    where
        F: Fn(&Recorded) -> Response + Send + Sync + 'static,
    {
        Backend::serving(move |request| std::future::ready(respond(&request))).await
    }

    /// A server that answers each request with what `serve(request)` resolves to, e.g. a
    /// backend that works a while and then calls another service. The request is recorded, and
    /// leaves the in-flight count, once its response is ready.
    pub async fn serving<F, Fut>(serve: F) -> Backend
    where
        F: Fn(Recorded) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(InFlight::default());
        let serve = Arc::new(serve);
        let (log, counter) = (Arc::clone(&requests), Arc::clone(&in_flight));
        let router = Router::new().fallback(move |request: Request| {
            let (log, counter, serve) = (Arc::clone(&log), Arc::clone(&counter), Arc::clone(&serve));
            async move {
                counter.enter();
                let response = Backend::answer(request, log, serve.as_ref()).await;
                counter.leave();
                response
            }
        });
        Backend { server: Server::start(router).await, requests, in_flight }
    }

    /// Reads and records `request`, and answers it with `serve`.
    async fn answer<F, Fut>(request: Request, log: Arc<Mutex<Vec<Recorded>>>, serve: &F) -> Response
    where
        F: Fn(Recorded) -> Fut,
        Fut: Future<Output = Response>,
    {
        let (parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
            return Response::builder()
                .status(StatusCode::PAYLOAD_TOO_LARGE)
                .body(Body::empty())
                .expect("a static response is valid");
        };
        let uri = parts.uri.path_and_query().map_or_else(|| parts.uri.to_string(), |pq| pq.to_string());
        let recorded = Recorded { method: parts.method, uri, headers: parts.headers, body };
        let response = serve(recorded.clone()).await;
        // Recorded before the response is sent, so a client that got its answer finds the
        // request in the log. The lock is never held across an await.
        log.lock().expect("no test panics while holding this lock").push(recorded);
        response
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("no test panics while holding this lock").clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.requests.lock().expect("no test panics while holding this lock").len()
    }

    /// The most recent request. Panics if there was none.
    pub fn last_request(&self) -> Recorded {
        self.requests
            .lock()
            .expect("no test panics while holding this lock")
            .last()
            .cloned()
            .expect("the backend has received no request")
    }

    /// The most requests this backend ever held at once (from arrival until the response was
    /// ready).
    pub fn peak_in_flight(&self) -> usize {
        self.in_flight.peak.load(Ordering::SeqCst)
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.requests.lock().expect("no test panics while holding this lock").clear();
    }
}

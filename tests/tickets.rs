//! Tickets end to end: a spawned quotagate (memory store) hands `X-Quotagate-Ticket` to the
//! admitted requests that should get one, and `POST /v1/tickets/close` on its own listener
//! frees their slots and charges their reported cost, once. Bad tickets (forged, cut, minted
//! under another hash key, closed already) free nothing and charge nothing. A slot never handed
//! back returns when its `hold` ends: that test runs the real routers in process with a manual
//! clock, so it waits for nothing.

mod support;

use axum::body::Body;
use http_body_util::BodyExt;
use quotagate::clock::Clock;
use quotagate::config::Config;
use quotagate::identity::Hasher;
use quotagate::limiter::{Nanos, SECOND};
use quotagate::server::{self, AppState};
use quotagate::ticket::{Minter, Ticket};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::fields::sf_items;
use support::{client, free_port, sample, Quotagate};
use tower::ServiceExt;

const HASH_KEY: &str = "tickets-test-hash-key-0123456789";

/// Plan `pro` (every token's): 20 cost units a day, 100 requests a minute whatever they cost.
/// `POST /api/summarize` costs 5 and lets one be in flight per caller; `/docs` is exempt.
const PLAN: &str = r#"
[identity]
hash_key = "tickets-test-hash-key-0123456789"

[defaults]
plan = "pro"

[plans.pro]
limits = [{ requests = 20, per = "day" }, { requests = 100, per = "minute", counts = "requests" }]

[[rules]]
name = "summarize"
path_prefix = "/api/summarize"
methods = ["POST"]
cost = 5
limits.pro = [{ concurrent = 1, hold = "1m" }]

[[rules]]
name = "docs"
path_prefix = "/docs"
exempt = true
"#;

/// A quotagate serving checks on its URL and ticket closes on `tickets_listen`.
struct Gate {
    quotagate: Quotagate,
    tickets: u16,
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("a visible ASCII header"))
    }

    fn ticket(&self) -> Option<String> {
        self.header("x-quotagate-ticket").map(str::to_owned)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn items(&self, field: &str) -> Vec<String> {
        sf_items(self.header(field).unwrap_or_else(|| panic!("no {field} in {:?}", self.headers)))
    }

    /// What the `RateLimit` item `name` has left (`r`).
    fn remaining(&self, name: &str) -> u64 {
        let items = self.items("ratelimit");
        let item =
            items.iter().find(|i| i.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{items:?}"));
        item.split(' ').find_map(|p| p.strip_prefix("r=")).unwrap().parse().unwrap()
    }

    /// A problem+json answer of `status` and `kind`.
    fn assert_problem(&self, status: StatusCode, kind: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        let body = self.json();
        assert_eq!(
            (body["type"].as_str(), body["status"].as_u64()),
            (Some(kind), Some(u64::from(status.as_u16())))
        );
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    }
}

async fn answer(res: reqwest::Response) -> Answer {
    let (status, headers) = (res.status(), res.headers().clone());
    Answer { status, headers, body: res.text().await.expect("a body") }
}

impl Gate {
    /// `config` (TOML) with `server.tickets_listen` added on a free port; `server` is more of
    /// `[server]`.
    async fn start(config: &str, server: &str) -> Gate {
        let tickets = free_port();
        let config = format!("[server]\ntickets_listen = \"127.0.0.1:{tickets}\"\n{server}\n{config}");
        Gate { quotagate: Quotagate::start(&config).await, tickets }
    }

    /// A forwardAuth check of `method uri` by the caller of `token`, as Traefik sends it.
    async fn check(&self, method: &str, uri: &str, token: &str) -> Answer {
        let req = forwarded(client().get(format!("{}/", self.quotagate.url())), method, uri, token);
        answer(req.send().await.expect("quotagate answers a check")).await
    }

    async fn summarize(&self, token: &str) -> Answer {
        self.check("POST", "/api/summarize", token).await
    }

    fn tickets_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.tickets)
    }

    /// `POST /v1/tickets/close` with `body` as is, and `authorization` if given.
    async fn close_raw(&self, body: impl Into<reqwest::Body>, authorization: Option<&str>) -> Answer {
        let mut req = client()
            .post(self.tickets_url("/v1/tickets/close"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        answer(req.send().await.expect("the tickets listener answers")).await
    }

    async fn close(&self, body: Value) -> Answer {
        self.close_raw(body.to_string(), None).await
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = self.quotagate.metrics().await.expect("metrics");
        sample(&text, series).unwrap_or(0.0)
    }
}

/// `req` with the headers Traefik's forwardAuth adds for `method uri`, from the caller of `token`.
fn forwarded(req: reqwest::RequestBuilder, method: &str, uri: &str, token: &str) -> reqwest::RequestBuilder {
    req.header("x-forwarded-method", method)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "api.example.com")
        .header("x-forwarded-uri", uri)
        .header("x-forwarded-for", "203.0.113.7")
        .header("authorization", format!("Bearer {token}"))
}

/// The tickets the test's config mints, read and minted as quotagate does.
fn minter(hash_key: &str) -> Minter {
    Minter::new(&Hasher::new(hash_key.as_bytes()))
}

/// `ticket` with one base64url character in its middle changed to another.
fn forged(ticket: &str) -> String {
    let i = ticket.len() / 2;
    let to = if ticket.as_bytes()[i] == b'A' { "B" } else { "A" };
    format!("{}{to}{}", &ticket[..i], &ticket[i + 1..])
}

#[tokio::test]
async fn tickets_go_only_to_admitted_requests_that_hold_a_slot() {
    let gate = Gate::start(PLAN, "").await;
    let plain = gate.check("GET", "/api/items", "tok-a").await;
    assert_eq!((plain.status, plain.ticket()), (StatusCode::OK, None), "no concurrency limit, no ticket");
    let docs = gate.check("GET", "/docs/intro", "tok-a").await;
    assert_eq!((docs.status, docs.ticket()), (StatusCode::OK, None), "exempt");

    let first = gate.summarize("tok-a").await;
    assert_eq!(first.status, StatusCode::OK);
    let ticket = first.ticket().expect("a request holding a slot gets a ticket");
    let read = minter(HASH_KEY).read(&ticket).expect("a ticket of this hash key");
    assert_eq!((read.cost, &*read.plan, read.scopes.len()), (5, "pro", 2), "{read:?}");
    assert!(!ticket.contains("tok-a"));

    // One in flight per caller: the second is denied, and gets no ticket.
    let second = gate.summarize("tok-a").await;
    assert_eq!((second.status, second.ticket()), (StatusCode::TOO_MANY_REQUESTS, None), "{}", second.body);
    assert!(second
        .items("ratelimit-policy")
        .contains(&"summarize.concurrent q=1 qu=concurrent-requests".to_owned()));
    let state = second.items("ratelimit");
    let slot = state.iter().find(|i| i.starts_with("summarize.concurrent ")).expect("the concurrency item");
    let t: u64 =
        slot.strip_prefix("summarize.concurrent r=0 t=").unwrap_or_else(|| panic!("{slot}")).parse().unwrap();
    let retry: u64 = second.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&t) && (1..=60).contains(&retry) && t <= retry, "{slot}, Retry-After {retry}");
    let body = second.json();
    assert_eq!(body["violated-policies"], json!(["summarize.concurrent"]), "{body}");

    // Another caller has slots of its own.
    let other = gate.summarize("tok-b").await;
    assert_eq!(other.status, StatusCode::OK);
    assert_ne!(other.ticket(), Some(ticket));
    assert_eq!(gate.metric("quotagate_tickets_issued_total").await, 2.0);
    assert_eq!(gate.metric("quotagate_tickets_refused_total").await, 1.0);
}

#[tokio::test]
async fn with_tickets_always_every_admitted_request_with_limits_gets_one() {
    let config =
        PLAN.replace("[defaults]", "[answers]\ntickets = \"always\"\nticket_hold = \"30s\"\n\n[defaults]");
    let gate = Gate::start(&config, "").await;
    let plain = gate.check("GET", "/api/items", "tok-a").await;
    let ticket = plain.ticket().expect("always");
    let read = minter(HASH_KEY).read(&ticket).unwrap();
    assert_eq!((read.cost, read.scopes.len()), (1, 1));
    let docs = gate.check("GET", "/docs/intro", "tok-a").await;
    assert_eq!(docs.ticket(), None, "an exempt request has no limits to report to");
    for _ in 0..19 {
        assert!(gate.check("GET", "/api/items", "tok-a").await.ticket().is_some());
    }
    let denied = gate.check("GET", "/api/items", "tok-a").await;
    assert_eq!((denied.status, denied.ticket()), (StatusCode::TOO_MANY_REQUESTS, None));
}

#[tokio::test]
async fn closing_a_ticket_frees_its_slot() {
    let gate = Gate::start(PLAN, "").await;
    let first = gate.summarize("tok-a").await;
    let ticket = first.ticket().expect("a ticket");
    assert_eq!(gate.summarize("tok-a").await.status, StatusCode::TOO_MANY_REQUESTS);

    let closed = gate.close(json!({ "ticket": ticket })).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert_eq!(closed.header("content-type"), Some("application/json"));
    let body = closed.json();
    assert_eq!((body["closed"].as_bool(), body["released"].as_u64()), (Some(true), Some(1)), "{body}");
    assert!(body["charged"].is_array(), "{body}");

    let again = gate.summarize("tok-a").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert!(again.ticket().is_some_and(|t| t != ticket));
    assert_eq!(gate.metric("quotagate_tickets_closed_total{result=\"closed\"}").await, 1.0);
}

#[tokio::test]
async fn closing_twice_answers_404_the_second_time_and_does_nothing() {
    let gate = Gate::start(PLAN, "").await;
    let ticket = gate.summarize("tok-a").await.ticket().expect("a ticket");
    let first = gate.close(json!({ "ticket": ticket })).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // Someone else's request now holds the slot; a retried close must not free it.
    let holder = gate.summarize("tok-a").await;
    assert_eq!(holder.status, StatusCode::OK);
    let before = gate.check("GET", "/api/items", "tok-a").await.remaining("day");
    let second = gate.close(json!({ "ticket": ticket, "cost": 7 })).await;
    second.assert_problem(StatusCode::NOT_FOUND, "urn:quotagate:unknown-ticket");
    assert_eq!(gate.summarize("tok-a").await.status, StatusCode::TOO_MANY_REQUESTS, "the slot is still held");
    assert_eq!(
        gate.check("GET", "/api/items", "tok-a").await.remaining("day"),
        before - 1,
        "nothing charged"
    );
    assert_eq!(gate.metric("quotagate_tickets_closed_total{result=\"unknown\"}").await, 1.0);
}

#[tokio::test]
async fn bad_tickets_free_nothing_and_charge_nothing() {
    let gate = Gate::start(PLAN, "").await;
    let ticket = gate.summarize("tok-a").await.ticket().expect("a ticket");
    let remaining = gate.check("GET", "/api/items", "tok-a").await.remaining("day");
    assert_eq!(remaining, 20 - 5 - 1);

    // A foreign caller's ticket: the same request said to be another caller's, minted under
    // another hash key (no one without this service's key can mint one under it).
    let genuine = minter(HASH_KEY).read(&ticket).unwrap();
    let b = gate.summarize("tok-b").await.ticket().expect("b's ticket");
    let foreign = Ticket { caller: minter(HASH_KEY).read(&b).unwrap().caller, ..genuine.clone() };
    let foreign = minter("another-hash-key-0123456789abcdef").mint(&foreign).unwrap();
    let same_under_other_key = minter("another-hash-key-0123456789abcdef").mint(&genuine).unwrap();
    let bad = [
        (forged(&ticket), "urn:quotagate:invalid-ticket"),
        (ticket[..ticket.len() - 3].to_owned(), "urn:quotagate:invalid-ticket"),
        (ticket[..20].to_owned(), "urn:quotagate:invalid-ticket"),
        (foreign, "urn:quotagate:invalid-ticket"),
        (same_under_other_key, "urn:quotagate:invalid-ticket"),
        (format!("qt2.{}", &ticket[4..]), "urn:quotagate:invalid-ticket"),
        ("garbage".to_owned(), "urn:quotagate:invalid-ticket"),
    ];
    for (text, kind) in &bad {
        let res = gate.close(json!({ "ticket": text, "cost": 100 })).await;
        res.assert_problem(StatusCode::BAD_REQUEST, kind);
        assert!(!res.body.contains(&ticket[8..40]), "the answer quotes the ticket: {}", res.body);
    }
    assert_eq!(gate.summarize("tok-a").await.status, StatusCode::TOO_MANY_REQUESTS, "the slot is still held");
    assert_eq!(
        gate.check("GET", "/api/items", "tok-a").await.remaining("day"),
        remaining - 1,
        "nothing charged"
    );
    assert_eq!(gate.metric("quotagate_tickets_closed_total{result=\"invalid\"}").await, bad.len() as f64);
    assert_eq!(gate.metric("quotagate_ticket_cost_reported_total").await, 0.0);
}

#[tokio::test]
async fn a_cost_of_five_against_a_quota_of_twenty_lets_exactly_four_through() {
    let config = r#"
[identity]
hash_key = "tickets-test-hash-key-0123456789"

[plans.pro]
limits = [{ requests = 20, per = "day" }]

[defaults]
plan = "pro"

[[rules]]
name = "export"
path_prefix = "/api/export"
cost = 5
limits.pro = [{ requests = 1000, per = "day", counts = "requests" }]
"#;
    let gate = Gate::start(config, "").await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(gate.check("GET", "/api/export", "tok-a").await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(answers[3].remaining("day"), 0);
    assert_eq!(answers[3].remaining("export.day"), 1000 - 4, "a limit counting requests takes 1 each");
    assert_eq!(answers[4].json()["violated-policies"], json!(["day"]));
    // A request of cost 1 still does not fit either.
    assert_eq!(gate.check("GET", "/api/items", "tok-a").await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_reported_cost_that_takes_the_quota_over_denies_the_next_check() {
    let config = PLAN.replace("[defaults]", "[answers]\ntickets = \"always\"\n\n[defaults]");
    let gate = Gate::start(&config, "").await;
    let first = gate.check("GET", "/api/items", "tok-a").await;
    assert_eq!(first.remaining("day"), 19);
    let closed = gate.close(json!({ "ticket": first.ticket().expect("always"), "cost": 30 })).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    let body = closed.json();
    assert_eq!(
        body["charged"],
        json!([{ "name": "day", "cost": 30, "remaining": 0 }]),
        "only the limit counting cost"
    );
    let next = gate.check("GET", "/api/items", "tok-a").await;
    assert_eq!(next.status, StatusCode::TOO_MANY_REQUESTS, "{}", next.body);
    assert_eq!(next.json()["violated-policies"], json!(["day"]));
    assert_eq!(gate.metric("quotagate_ticket_cost_reported_total").await, 30.0);
}

#[tokio::test]
async fn closing_needs_the_bearer_token_when_one_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let token = "backend-token-0123456789abcdef";
    let file = dir.path().join("tickets-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let gate = Gate::start(PLAN, &format!("tickets_token_file = {:?}", file.display().to_string())).await;
    let ticket = gate.summarize("tok-a").await.ticket().expect("a ticket");
    let body = json!({ "ticket": ticket }).to_string();
    for authorization in
        [None, Some("Bearer wrong-token-0123456789abcdef"), Some(&*format!("Basic {token}")), Some("Bearer")]
    {
        let res = gate.close_raw(body.clone(), authorization).await;
        res.assert_problem(StatusCode::UNAUTHORIZED, "urn:quotagate:tickets-unauthorized");
        assert!(res.header("www-authenticate").is_some_and(|c| c.starts_with("Bearer")));
        assert!(!res.body.contains(token));
    }
    assert_eq!(gate.summarize("tok-a").await.status, StatusCode::TOO_MANY_REQUESTS, "nothing was closed");
    let res = gate.close_raw(body, Some(&format!("bearer {token}"))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(!gate.quotagate.log().contains(token), "the token is never logged");
}

#[tokio::test]
async fn the_check_listener_never_closes_a_ticket() {
    let gate = Gate::start(PLAN, "").await;
    let ticket = gate.summarize("tok-a").await.ticket().expect("a ticket");
    // What a client could send through Traefik: on the check listener it is a check.
    let req = client().post(format!("{}/v1/tickets/close", gate.quotagate.url()));
    let req =
        forwarded(req, "POST", "/v1/tickets/close", "tok-a").body(json!({ "ticket": ticket }).to_string());
    let res = answer(req.send().await.unwrap()).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.body.is_empty() && res.header("x-ratelimit-limit").is_some(),
        "a check's answer: {:?}",
        res.headers
    );
    assert_eq!(gate.summarize("tok-a").await.status, StatusCode::TOO_MANY_REQUESTS, "the slot is still held");

    // And the tickets listener serves nothing else.
    let get = |path: &str| client().get(gate.tickets_url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    for path in ["/metrics", "/readyz", "/", "/v1/tickets"] {
        answer(get(path).await.unwrap())
            .await
            .assert_problem(StatusCode::NOT_FOUND, "urn:quotagate:not-found");
    }
    let res = answer(get("/v1/tickets/close").await.unwrap()).await;
    res.assert_problem(StatusCode::METHOD_NOT_ALLOWED, "urn:quotagate:method-not-allowed");
    assert_eq!(res.header("allow"), Some("POST"));
}

#[tokio::test]
async fn a_close_request_that_is_not_one_is_a_problem_never_an_error() {
    let gate = Gate::start(PLAN, "").await;
    let ticket = gate.summarize("tok-a").await.ticket().expect("a ticket");
    let invalid = "urn:quotagate:invalid-close-request";
    let bodies = [
        String::new(),
        "not json".to_owned(),
        "[]".to_owned(),
        "{}".to_owned(),
        json!({ "ticket": 5 }).to_string(),
        json!({ "ticket": ticket, "cost": -1 }).to_string(),
        json!({ "ticket": ticket, "cost": 1.5 }).to_string(),
        json!({ "ticket": ticket, "cost": "5" }).to_string(),
        json!({ "ticket": ticket, "cost": 1_000_000_001u64 }).to_string(),
        json!({ "ticket": ticket, "cost": u64::MAX }).to_string(),
        json!({ "ticket": ticket, "refund": 3 }).to_string(),
        format!("{{\"ticket\": \"{ticket}\""),
        "\u{0}\u{ff}".to_owned(),
    ];
    for body in bodies {
        gate.close_raw(body.clone(), None).await.assert_problem(StatusCode::BAD_REQUEST, invalid);
    }
    let huge = json!({ "ticket": "x".repeat(9000) }).to_string();
    gate.close_raw(huge, None)
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "urn:quotagate:body-too-large");
    let bytes: Vec<u8> = (0..=255u8).collect();
    gate.close_raw(bytes, None).await.assert_problem(StatusCode::BAD_REQUEST, invalid);
    assert_eq!(gate.summarize("tok-a").await.status, StatusCode::TOO_MANY_REQUESTS, "nothing was closed");
    // The largest cost allowed is taken.
    let res = gate.close(json!({ "ticket": ticket, "cost": 1_000_000_000u64 })).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408_within_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gate = Gate::start(PLAN, "header_read_timeout = \"400ms\"").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.tickets)).await.unwrap();
    let head =
        "POST /v1/tickets/close HTTP/1.1\r\nHost: quotagate\r\nContent-Length: 60\r\n\r\n{\"ticket\": ";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answered and closed within 10 s")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 408 "), "{raw}");
    assert!(raw.contains("urn:quotagate:body-timeout"), "{raw}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "{:?}", started.elapsed());
}

/// 2026-11-23 19:05:00 UTC.
const T0: Nanos = 1_795_460_700 * SECOND;

/// The real routers in process, on a manual clock.
struct InProcess {
    state: AppState,
    clock: Clock,
}

impl InProcess {
    fn new(config: &str) -> InProcess {
        let config = format!("[server]\ntickets_listen = \"127.0.0.1:9\"\n{config}");
        let config = Config::parse(&config, "tickets.toml", None).unwrap_or_else(|e| panic!("{e}"));
        let clock = Clock::manual(T0);
        InProcess { state: AppState::new(config, clock.clone()), clock }
    }

    async fn summarize(&self) -> (u16, Option<String>, Option<String>) {
        let req = axum::http::Request::get("/")
            .header("x-forwarded-method", "POST")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.example.com")
            .header("x-forwarded-uri", "/api/summarize")
            .header("authorization", "Bearer tok-a")
            .body(Body::empty())
            .unwrap();
        let res = server::router(self.state.clone(), false).oneshot(req).await.unwrap();
        let header = |name| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        (res.status().as_u16(), header("x-quotagate-ticket"), header("retry-after"))
    }

    /// A series of `/metrics`, as of the manual clock.
    async fn metric(&self, series: &str) -> Option<f64> {
        let req = axum::http::Request::get("/metrics").body(Body::empty()).unwrap();
        let res = server::router(self.state.clone(), true).oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        sample(std::str::from_utf8(&body).unwrap(), series)
    }

    async fn close(&self, ticket: &str) -> u16 {
        self.close_json(json!({ "ticket": ticket })).await.0
    }

    async fn close_json(&self, body: Value) -> (u16, Value) {
        let req = axum::http::Request::post("/v1/tickets/close").body(Body::from(body.to_string())).unwrap();
        let res = server::tickets_router(self.state.clone()).oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }
}

#[tokio::test]
async fn the_slot_of_a_ticket_never_closed_returns_when_its_hold_ends() {
    let gate = InProcess::new(&PLAN.replace("hold = \"1m\"", "hold = \"2m\""));
    let (status, ticket, _) = gate.summarize().await;
    let ticket = ticket.expect("a ticket");
    assert_eq!(status, 200);
    let read = minter(HASH_KEY).read(&ticket).unwrap();
    assert_eq!(read.expires, T0 + 120 * SECOND, "a ticket expires with its hold");
    assert_eq!(read.caller, Hasher::new(HASH_KEY.as_bytes()).token(b"tok-a"), "names the caller by its key");

    gate.clock.advance(std::time::Duration::from_secs(30));
    let (status, _, retry) = gate.summarize().await;
    assert_eq!((status, retry.as_deref()), (429, Some("90")), "the oldest slot's hold ends in 90 s");
    gate.clock.advance(std::time::Duration::from_nanos(90 * SECOND - 1));
    assert_eq!(gate.summarize().await.0, 429, "a nanosecond before the hold ends");
    gate.clock.advance(std::time::Duration::from_nanos(1));
    let (status, fresh, _) = gate.summarize().await;
    assert_eq!(status, 200, "the backend never closed it: the slot freed itself");
    assert_eq!(gate.metric("quotagate_tickets_expired_total").await, Some(1.0));
    assert_eq!(gate.metric("quotagate_tickets_in_flight").await, Some(1.0), "the fresh one");

    // The expired ticket closes nothing, not even the slot taken since.
    assert_eq!(gate.close(&ticket).await, 404);
    assert_eq!(gate.summarize().await.0, 429);
    assert_eq!(gate.close(&fresh.expect("a ticket")).await, 200);
    assert_eq!(gate.metric("quotagate_tickets_in_flight").await, Some(0.0));
    assert_eq!(gate.summarize().await.0, 200);
    assert_eq!(
        gate.metric("quotagate_tickets_expired_total").await,
        Some(1.0),
        "a closed slot did not expire"
    );
}

#[tokio::test]
async fn a_close_charges_the_limits_of_the_callers_override() {
    let dir = tempfile::tempdir().unwrap();
    let admin_token = "the-admin-token-0123456789";
    let file = dir.path().join("admin-token");
    std::fs::write(&file, admin_token).unwrap();
    let config = PLAN.replace("[defaults]", "[answers]\ntickets = \"always\"\n\n[defaults]");
    let config = format!(
        "admin_listen = \"127.0.0.1:10\"\n[admin]\ntoken_file = {:?}\n{config}",
        file.display().to_string()
    );
    let gate = InProcess::new(&config);
    let limits = json!([{ "requests": 50, "per": "day", "name": "vip-day" }]);
    let put = axum::http::Request::put("/v1/overrides")
        .header("authorization", format!("Bearer {admin_token}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({ "token": "tok-a", "limits": limits }).to_string()))
        .unwrap();
    let set = server::admin_router(gate.state.clone()).oneshot(put).await.unwrap();
    assert!(set.status().is_success(), "{:?}", set.status());

    let (status, ticket, _) = gate.summarize().await;
    assert_eq!(status, 200);
    let (status, body) = gate.close_json(json!({ "ticket": ticket.expect("always"), "cost": 30 })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["charged"],
        json!([{ "name": "vip-day", "cost": 30, "remaining": 50 - 5 - 30 }]),
        "{body}"
    );
}

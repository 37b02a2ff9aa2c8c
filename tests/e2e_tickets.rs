//! End to end: concurrency limits and their tickets. A client talks to a real Traefik, whose
//! forwardAuth middleware asks a real quotagate process and copies `X-Quotagate-Ticket` to the
//! backend; the backend hands the ticket back on quotagate's tickets listener
//! (`POST /v1/tickets/close`, with the bearer token of `server.tickets_token_file`), as the
//! README's "Concurrency limits and tickets" tells backends to. Bad tickets, costs and the
//! endpoint's answers are tested against one process in tests/tickets.rs.
//!
//! Real time is unavoidable here: the backend works 1 s per request, and the leak-guard test
//! uses a `hold` of 2 s. Every wait is bounded (`support::bounded`); none crosses a window: the
//! other limit is per day.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use support::fields::sf_item;
use support::tickets::{close, closing_backend, Closer, CLOSE_STATUS_HEADER, TICKET_HEADER};
use support::{bounded, client, Backend, Quotagate, Traefik};

/// How long the closing backend works on each request.
const WORK: Duration = Duration::from_secs(1);

/// The bearer token backends present to the tickets listener.
const TICKETS_TOKEN: &str = "e2e-backends-close-with-this-token";

const AUTH_RESPONSE_HEADERS: [&str; 5] =
    ["RateLimit-Policy", "RateLimit", "X-Quotagate-Plan", "X-Quotagate-Identity", "X-Quotagate-Ticket"];

/// Two requests in flight per caller, their slots freed after `hold` if never closed, beside a
/// daily quota no test reaches.
fn config(hold: &str, tickets_token_file: &Path, hash_key: &str) -> String {
    format!(
        r#"
[server]
tickets_token_file = "{}"

[identity]
hash_key = "{hash_key}"

[plans.free]
limits = [{{ requests = 1000, per = "day" }}, {{ concurrent = 2, hold = "{hold}" }}]
"#,
        tickets_token_file.display()
    )
}

/// A quotagate with a tickets listener, the tickets token in a file beside it.
struct Gate {
    quotagate: Quotagate,
    closer: Closer,
    _dir: tempfile::TempDir,
}

async fn start_gate(hold: &str, hash_key: &str) -> Gate {
    let dir = tempfile::tempdir().expect("a temp dir");
    let token_file = dir.path().join("tickets_token");
    // With a trailing newline, as `openssl rand -hex 32 > file` writes it.
    std::fs::write(&token_file, format!("{TICKETS_TOKEN}\n")).expect("write the tickets token");
    let quotagate = Quotagate::builder(&config(hold, &token_file, hash_key)).tickets_listener().start().await;
    let closer =
        Closer { tickets_url: quotagate.tickets_url(), token: Some(TICKETS_TOKEN.to_owned()), cost: None };
    Gate { quotagate, closer, _dir: dir }
}

async fn traefik(quotagate: &Quotagate, backend: &Backend) -> Traefik {
    Traefik::builder(&format!("{}/", quotagate.url()), &backend.url())
        .trust_forward_header(false)
        .auth_response_headers(AUTH_RESPONSE_HEADERS)
        .start()
        .await
}

/// One answer as the client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
    took: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("a header quotagate or the backend sent is ASCII"))
    }
}

/// `n` requests for `token` sent at once to `url`; their answers in the order they were sent.
/// Each client also sends a forged `X-Quotagate-Ticket`, which Traefik must not pass on.
async fn at_once(url: &str, token: &str, n: usize) -> Vec<Answer> {
    let http = client();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (http, url, token) = (http.clone(), url.to_owned(), token.to_owned());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = http
                    .get(url)
                    .bearer_auth(token)
                    .header(TICKET_HEADER, "qt1.forged-by-the-client")
                    .send()
                    .await
                    .expect("Traefik answers");
                let (status, headers) = (r.status().as_u16(), r.headers().clone());
                let body = r.text().await.expect("a body");
                Answer { status, headers, body, took: started.elapsed() }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("the request task does not panic"));
    }
    answers
}

fn statuses(answers: &[Answer]) -> Vec<u16> {
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    statuses.sort_unstable();
    statuses
}

/// A 429 from the concurrency limit, as the issue specifies it; `hold_secs` bounds the waits.
fn assert_refused_by_concurrency(answer: &Answer, hold_secs: u64) {
    assert_eq!(answer.status, 429, "{answer:?}");
    let retry: u64 = answer.header("retry-after").expect("Retry-After").parse().expect("whole seconds");
    assert!((1..=hold_secs).contains(&retry), "Retry-After {retry}, hold {hold_secs} s");
    let policy = answer.header("ratelimit-policy").expect("RateLimit-Policy");
    assert_eq!(sf_item(policy, "concurrent").as_deref(), Some("concurrent q=2 qu=concurrent-requests"));
    let state = answer.header("ratelimit").expect("RateLimit");
    let item = sf_item(state, "concurrent").unwrap_or_else(|| panic!("no concurrent item in {state:?}"));
    let t: u64 = item.strip_prefix("concurrent r=0 t=").unwrap_or_else(|| panic!("{item}")).parse().unwrap();
    assert!((1..=hold_secs).contains(&t), "{item}");
    assert_eq!(answer.header("content-type"), Some("application/problem+json"));
    let body: Value = serde_json::from_str(&answer.body).expect("a JSON body");
    assert_eq!(body["status"], 429);
    assert_eq!(body["violated-policies"], json!(["concurrent"]), "{body}");
    assert_eq!(answer.header(TICKET_HEADER), None, "a refused request holds no ticket");
}

/// A request the closing backend served, having closed its ticket with a 200.
fn assert_served_and_closed(answer: &Answer) {
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.took >= WORK, "the backend worked {WORK:?} on it: {answer:?}");
    assert_eq!(answer.header(CLOSE_STATUS_HEADER), Some("200"), "{answer:?}");
    let closed: Value = serde_json::from_str(&answer.body).expect("the close's JSON answer");
    assert_eq!(closed["closed"], true, "{closed}");
    assert_eq!(closed["released"], 1, "one concurrency slot: {closed}");
}

/// The value of `series` in the service's metrics (0 if it has not been written yet).
async fn metric(quotagate: &Quotagate, series: &str) -> f64 {
    let text = quotagate.metrics().await.expect("quotagate serves /metrics");
    support::sample(&text, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_requests_at_once_put_exactly_two_on_the_backend_and_the_next_two_pass_once_they_close() {
    let gate = start_gate("1m", "e2e-tickets-hash-key-0123456789").await;
    let backend = closing_backend(WORK, gate.closer.clone()).await;
    let traefik = traefik(&gate.quotagate, &backend).await;
    let url = format!("{}/api/infer", traefik.url());
    bounded(Duration::from_secs(60), async {
        let answers = at_once(&url, "ten-at-once", 10).await;
        let took: Vec<Duration> = answers.iter().map(|a| a.took).collect();
        assert_eq!(statuses(&answers), [200, 200, 429, 429, 429, 429, 429, 429, 429, 429], "took {took:?}");
        for answer in &answers {
            match answer.status {
                200 => assert_served_and_closed(answer),
                _ => assert_refused_by_concurrency(answer, 60),
            }
        }
        assert_eq!(backend.peak_in_flight(), 2, "two requests reached the backend at once");
        assert_eq!(backend.request_count(), 2, "the refused eight never reached it");
        let tickets: Vec<String> = backend
            .requests()
            .iter()
            .map(|r| r.header(TICKET_HEADER).expect("every request the backend got has a ticket").to_owned())
            .collect();
        assert!(
            tickets.iter().all(|t| t.starts_with("qt1.") && t != "qt1.forged-by-the-client"),
            "{tickets:?}"
        );
        assert_ne!(tickets[0], tickets[1]);
        assert!(tickets.iter().all(|t| !t.contains("ten-at-once")), "a ticket does not reveal the token");

        // Those two are done and their tickets closed: the next two pass, and a third beside
        // them is refused, since the slots came back and are still two.
        let answers = at_once(&url, "ten-at-once", 3).await;
        assert_eq!(statuses(&answers), [200, 200, 429]);
        for answer in &answers {
            match answer.status {
                200 => assert_served_and_closed(answer),
                _ => assert_refused_by_concurrency(answer, 60),
            }
        }
        assert_eq!(backend.peak_in_flight(), 2);
        assert_eq!(backend.request_count(), 4);

        let q = &gate.quotagate;
        assert_eq!(metric(q, "quotagate_tickets_issued_total").await, 4.0);
        assert_eq!(metric(q, "quotagate_tickets_closed_total{result=\"closed\"}").await, 4.0);
        assert_eq!(metric(q, "quotagate_tickets_refused_total").await, 9.0);
        assert_eq!(metric(q, "quotagate_tickets_expired_total").await, 0.0, "every slot was handed back");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_slots_of_a_backend_that_never_closes_return_after_hold() {
    const HOLD: Duration = Duration::from_secs(2);
    let gate = start_gate("2s", "e2e-tickets-hash-key-0123456789").await;
    // Answers at once and forgets its tickets.
    let backend = Backend::start().await;
    let traefik = traefik(&gate.quotagate, &backend).await;
    let url = format!("{}/api/infer", traefik.url());
    let http = client();
    let get = || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.get(url).bearer_auth("forgetful").send().await.expect("Traefik answers");
            let (status, headers) = (r.status().as_u16(), r.headers().clone());
            Answer { status, headers, body: r.text().await.expect("a body"), took: Duration::ZERO }
        }
    };
    bounded(Duration::from_secs(30), async {
        let taken = Instant::now();
        assert_eq!(get().await.status, 200);
        assert_eq!(get().await.status, 200);
        assert_refused_by_concurrency(&get().await, HOLD.as_secs());

        // Nobody closes: the slots come back by themselves, and not before `hold`.
        let first = support::poll(Duration::from_secs(10), || async {
            (get().await.status == 200).then(|| taken.elapsed())
        })
        .await
        .expect("a slot came back within 10 s");
        // Both slots were taken after `taken`; allow for the two processes' clocks.
        assert!(first >= HOLD - Duration::from_millis(100), "a slot came back after {first:?}");
        assert!(first <= HOLD + Duration::from_secs(3), "a slot came back only after {first:?}");
        // The other one too (taken a moment after the first), then both are held again.
        support::poll(Duration::from_secs(5), || async { (get().await.status == 200).then_some(()) })
            .await
            .expect("the second slot came back");
        assert_refused_by_concurrency(&get().await, HOLD.as_secs());
        assert_eq!(backend.request_count(), 4);

        // The expired tickets close no more: a late close frees nothing and charges nothing.
        let late = backend.requests()[0].header(TICKET_HEADER).expect("a ticket").to_owned();
        let closed = close(&gate.closer, &late).await.expect("the tickets listener answers");
        assert_eq!(closed.status, 404, "{closed:?}");
        assert_eq!(closed.content_type.as_deref(), Some("application/problem+json"));
        assert_refused_by_concurrency(&get().await, HOLD.as_secs());

        let q = &gate.quotagate;
        assert_eq!(metric(q, "quotagate_tickets_expired_total").await, 2.0);
        assert_eq!(metric(q, "quotagate_tickets_closed_total{result=\"closed\"}").await, 0.0);
        assert_eq!(metric(q, "quotagate_tickets_closed_total{result=\"unknown\"}").await, 1.0);
        assert_eq!(metric(q, "quotagate_tickets_issued_total").await, 4.0);
    })
    .await;
}

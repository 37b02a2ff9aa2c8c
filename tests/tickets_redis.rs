//! Concurrency tickets and reported costs across replicas: three quotagate processes on one
//! redis-server share one count of requests in flight, and a ticket issued by one replica may
//! be closed at any other, its cost charged where all of them see it. Checks go straight to
//! each replica's check listener (Traefik's part is in tests/e2e_tickets.rs); the daily quota
//! keeps window boundaries out of a run.

mod support;

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use support::fields::sf_item;
use support::tickets::{close, Closer, TICKET_HEADER};
use support::{bounded, client, Quotagate, RedisServer};

const TICKETS_TOKEN: &str = "replicas-backends-close-with-this";

fn config(redis: &str, tickets_token_file: &std::path::Path) -> String {
    format!(
        r#"
[server]
tickets_token_file = "{}"

[identity]
hash_key = "replicas-share-this-secret-key"

[plans.free]
limits = [{{ requests = 20, per = "day" }}, {{ concurrent = 2, hold = "1m" }}]

[store]
kind = "redis"

[store.redis]
url = "{redis}"
command_timeout = "2s"
# A Redis failure must show as a 503, not as a replica quietly counting on its own.
on_error = "deny"
"#,
        tickets_token_file.display()
    )
}

/// Three replicas on `redis`, each with its own tickets listener.
struct Replicas {
    replicas: Vec<Quotagate>,
    _dir: tempfile::TempDir,
}

impl Replicas {
    async fn start(redis: &RedisServer) -> Replicas {
        let dir = tempfile::tempdir().expect("a temp dir");
        let token_file = dir.path().join("tickets_token");
        std::fs::write(&token_file, format!("{TICKETS_TOKEN}\n")).expect("write the tickets token");
        let cfg = config(&redis.url(), &token_file);
        let mut replicas = Vec::new();
        for _ in 0..3 {
            let q = Quotagate::builder(&cfg).tickets_listener().start().await;
            q.wait_for_log("store: redis connected", Duration::from_secs(10)).await;
            replicas.push(q);
        }
        Replicas { replicas, _dir: dir }
    }

    /// How backends reach replica `i`'s tickets listener, reporting `cost`.
    fn closer(&self, i: usize, cost: Option<u64>) -> Closer {
        Closer { tickets_url: self.replicas[i].tickets_url(), token: Some(TICKETS_TOKEN.to_owned()), cost }
    }
}

/// One check's answer.
#[derive(Debug)]
struct Answer {
    /// Which replica answered.
    replica: usize,
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("quotagate's headers are ASCII"))
    }

    fn ticket(&self) -> &str {
        self.header(TICKET_HEADER).unwrap_or_else(|| panic!("no ticket: {self:?}"))
    }

    /// The `RateLimit` item of limit `name`, as [`sf_item`] writes it.
    fn state(&self, name: &str) -> String {
        let field = self.header("ratelimit").unwrap_or_else(|| panic!("no RateLimit: {self:?}"));
        sf_item(field, name).unwrap_or_else(|| panic!("no {name} item in {field:?}"))
    }
}

/// A forwardAuth check for `token` at replica `replica`.
async fn check(replicas: &Replicas, replica: usize, token: &str) -> Answer {
    let r = client()
        .get(format!("{}/api/export", replicas.replicas[replica].url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("the replica answers");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    Answer { replica, status, headers, body: r.text().await.expect("a body") }
}

/// `n` checks for `token` at once, spread round-robin over the replicas.
async fn at_once(replicas: &std::sync::Arc<Replicas>, token: &str, n: usize) -> Vec<Answer> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (replicas, token) = (std::sync::Arc::clone(replicas), token.to_owned());
            tokio::spawn(async move { check(&replicas, i % 3, &token).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("the check task does not panic"));
    }
    answers
}

/// Admitted and refused answers of a burst; panics on any other status or on a refusal that is
/// not the concurrency limit's.
fn split(answers: Vec<Answer>) -> (Vec<Answer>, Vec<Answer>) {
    let (admitted, refused): (Vec<_>, Vec<_>) = answers.into_iter().partition(|a| a.status == 200);
    for a in &refused {
        assert_eq!(a.status, 429, "{a:?}");
        let body: Value = serde_json::from_str(&a.body).expect("a problem+json body");
        assert_eq!(body["violated-policies"], json!(["concurrent"]), "{a:?}");
        assert!(a.state("concurrent").starts_with("concurrent r=0 "), "{a:?}");
    }
    (admitted, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_one_count_in_flight_and_close_each_others_tickets() {
    let redis = RedisServer::start();
    let replicas = std::sync::Arc::new(Replicas::start(&redis).await);
    bounded(Duration::from_secs(60), async {
        let (admitted, refused) = split(at_once(&replicas, "shared", 12).await);
        assert_eq!(admitted.len(), 2, "12 checks at once over 3 replicas, 2 in flight in total");
        assert_eq!(refused.len(), 10);
        // Every replica refuses while the two are held, whichever replica admitted them.
        for replica in 0..3 {
            assert_eq!(check(&replicas, replica, "shared").await.status, 429, "replica {replica}");
        }

        // Each ticket is handed back to another replica than the one that issued it.
        for a in &admitted {
            let closed =
                close(&replicas.closer((a.replica + 1) % 3, None), a.ticket()).await.expect("an answer");
            assert_eq!(closed.status, 200, "{closed:?}");
            assert_eq!(closed.body["released"], 1, "{closed:?}");
        }
        let (admitted, refused) = split(at_once(&replicas, "shared", 12).await);
        assert_eq!((admitted.len(), refused.len()), (2, 10), "both slots came back, for every replica");

        // A retried close, at yet another replica, releases nothing.
        let first = &admitted[0];
        let closed =
            close(&replicas.closer((first.replica + 1) % 3, None), first.ticket()).await.expect("an answer");
        assert_eq!(closed.status, 200, "{closed:?}");
        let again =
            close(&replicas.closer((first.replica + 2) % 3, None), first.ticket()).await.expect("an answer");
        assert_eq!(again.status, 404, "{again:?}");
        let (admitted, _) = split(at_once(&replicas, "shared", 6).await);
        assert_eq!(admitted.len(), 1, "one slot free, not two");

        // Every key the slots and closed-ticket markers left in Redis expires by itself.
        let keys = redis.cli(&["--scan", "--pattern", "quotagate:*"]);
        assert!(!keys.is_empty(), "the slots are kept in Redis");
        for key in keys.lines() {
            let ttl: i64 = redis.cli(&["PTTL", key]).parse().expect("PTTL answers a number");
            assert!(ttl > 0, "{key} has no TTL ({ttl})");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cost_reported_to_one_replica_is_seen_by_the_others() {
    let redis = RedisServer::start();
    let replicas = Replicas::start(&redis).await;
    bounded(Duration::from_secs(60), async {
        let a = check(&replicas, 0, "costly").await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.state("day").starts_with("day r=19 "), "{a:?}");

        // The backend reports that the request really cost 10 units, to another replica.
        let closed = close(&replicas.closer(1, Some(10)), a.ticket()).await.expect("an answer");
        assert_eq!(closed.status, 200, "{closed:?}");
        assert_eq!(closed.body["released"], 1, "{closed:?}");
        assert_eq!(
            closed.body["charged"],
            json!([{ "name": "day", "cost": 10, "remaining": 9 }]),
            "{closed:?}"
        );
        // A retried close, at a third replica, charges nothing more.
        let again = close(&replicas.closer(2, Some(10)), a.ticket()).await.expect("an answer");
        assert_eq!(again.status, 404, "{again:?}");

        // The third replica sees the 1 + 10 used: this check leaves 8.
        let b = check(&replicas, 2, "costly").await;
        assert_eq!(b.status, 200, "{b:?}");
        assert!(b.state("day").starts_with("day r=8 "), "{b:?}");

        // A report that takes the quota over is charged in full; every replica then refuses.
        let closed = close(&replicas.closer(0, Some(30)), b.ticket()).await.expect("an answer");
        assert_eq!(closed.status, 200, "{closed:?}");
        assert_eq!(
            closed.body["charged"],
            json!([{ "name": "day", "cost": 30, "remaining": 0 }]),
            "{closed:?}"
        );
        for replica in [1, 0, 2] {
            let c = check(&replicas, replica, "costly").await;
            assert_eq!(c.status, 429, "replica {replica}: {c:?}");
            let body: Value = serde_json::from_str(&c.body).expect("a problem+json body");
            assert_eq!(body["violated-policies"], json!(["day"]), "{c:?}");
            assert!(c.state("day").starts_with("day r=0 "), "{c:?}");
            let retry: u64 = c.header("retry-after").expect("Retry-After").parse().expect("seconds");
            assert!((1..=86_400).contains(&retry), "{c:?}");
        }
        // Another caller is untouched.
        assert_eq!(check(&replicas, 1, "frugal").await.status, 200);
    })
    .await;
}

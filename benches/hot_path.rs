//! The hot path without HTTP: what one forwardAuth check costs inside quotagate, step by step
//! (identity, policy, store, response, metrics), and the store under the shapes of load that
//! matter (one hot key, 100k keys, one key from several threads at once). `handler` runs the
//! whole axum handler through the router without a socket. The whole server under wrk, against
//! the ceiling and through Traefik, is `bench/run.sh`; see BENCHMARKS.md.
//!
//! The store benches call [`Memory`] directly, the memory store's own cost: `Store::check` wraps
//! the same call in an enum match (and an `async fn` once other backends exist).
//! `store/ticket_check_and_close` is a request holding a concurrency slot, checked and closed.
//!
//! `cargo bench --bench hot_path` (about a minute); `cargo bench --bench hot_path -- store` for
//! a subset.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::body::Body;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Request};
use quotagate::clock::Clock;
use quotagate::config::Config;
use quotagate::identity::Key;
use quotagate::limiter::{Algorithm, Limit, Nanos, Window, SECOND};
use quotagate::policy::{Applicable, PlanId, Scopes};
use quotagate::request::Forwarded;
use quotagate::server::response::{self, Report};
use quotagate::server::{self, AppState};
use quotagate::store::{Counting, Memory, Scope};
use quotagate::telemetry::{Metrics, Outcome};
use tower::ServiceExt;

/// The plan limits used below: one that no bench reaches (every check allowed) and one that
/// denies after the first request. The rule gives the policy lookup something to match.
const CONFIG: &str = r#"
[identity]
sources = ["bearer", "token", "header:X-API-Key"]
hash_key = "quotagate benchmark hash key, not a secret"

[defaults]
plan = "open"

[plans.open]
limits = [{ requests = 4_000_000_000, per = "day" }]

[plans.tiny]
limits = [{ requests = 1, per = "day" }]

[tokens]
"tok-tiny" = "tiny"

[[rules]]
name = "summarize"
path_prefix = "/api/summarize"
methods = ["POST"]
limits.tiny = [{ requests = 1, per = "minute" }]

[store]
kind = "memory"
max_keys = 1_000_000
"#;

/// 2026-01-15T12:00:00Z, well inside a day window: the benches never cross a window boundary.
const NOW: Nanos = 1_768_478_400 * SECOND;

fn config() -> Config {
    Config::parse(CONFIG, "benches/hot_path.rs", None).expect("the bench config is valid")
}

/// The headers Traefik's forwardAuth sends for `GET /api/items?page=2` with a bearer token.
fn headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii"));
    h.insert("x-forwarded-method", HeaderValue::from_static("GET"));
    h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    h.insert("x-forwarded-host", HeaderValue::from_static("api.example.com"));
    h.insert("x-forwarded-uri", HeaderValue::from_static("/api/items?page=2"));
    h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h
}

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The key of `tok-N` as quotagate computes it.
fn keys(config: &Config, n: usize) -> Vec<Key> {
    (0..n)
        .map(|i| {
            let h = headers(&format!("tok-{i}"));
            let fwd = Forwarded::from_headers(&h, "GET", "/").expect("a readable request");
            config.identity.identify(&h, &fwd, PEER).expect("a bearer token").key()
        })
        .collect()
}

fn identity(c: &mut Criterion) {
    let config = config();
    let h = headers("tok-123456");
    let mut g = c.benchmark_group("identity");
    g.bench_function("forwarded_headers", |b| {
        b.iter(|| {
            Forwarded::from_headers(black_box(&h), "GET", "/")
                .expect("a readable request")
                .path
                .canonical()
                .len()
        })
    });
    let fwd = Forwarded::from_headers(&h, "GET", "/").expect("a readable request");
    g.bench_function("bearer_token", |b| {
        b.iter(|| config.identity.identify(black_box(&h), &fwd, PEER).expect("a bearer token"))
    });
    // The third source: two misses on Authorization first.
    let mut by_header = headers("unused");
    by_header.remove("authorization");
    by_header.insert("x-api-key", HeaderValue::from_static("tok-123456"));
    g.bench_function("x_api_key_third_source", |b| {
        b.iter(|| config.identity.identify(black_box(&by_header), &fwd, PEER).expect("a header token"))
    });
    g.finish();
}

fn policy(c: &mut Criterion) {
    let config = config();
    let h = headers("tok-123456");
    let fwd = Forwarded::from_headers(&h, "GET", "/").expect("a readable request");
    let caller = config.identity.identify(&h, &fwd, PEER).expect("a bearer token");
    let mut g = c.benchmark_group("policy");
    g.bench_function("plan_of_unknown_token", |b| {
        b.iter(|| config.policy.plan_of(black_box(&caller), &h).expect("the default plan"))
    });
    let plan = config.policy.plan_of(&caller, &h).expect("the default plan");
    g.bench_function("applicable_one_rule_no_match", |b| {
        b.iter(|| matches!(config.policy.applicable(black_box(plan), &fwd), Applicable::Limited(_)))
    });
    g.finish();
}

/// The scopes that apply to `fwd` for `plan`, as the server gets them (none if exempt or unlimited).
fn scopes<'p>(config: &'p Config, plan: PlanId, fwd: &Forwarded<'_>) -> Scopes<'p> {
    match config.policy.applicable(plan, fwd) {
        Applicable::Limited(scopes) => scopes,
        Applicable::Exempt(_) | Applicable::Unlimited => Scopes::new(),
    }
}

/// The plan scope of `plan` for the store, as the server builds it.
fn scoped(config: &Config, plan: PlanId, fwd: &Forwarded<'_>) -> Vec<(u32, Vec<quotagate::limiter::Limit>)> {
    scopes(config, plan, fwd).iter().map(|s| (s.id, s.limits.to_vec())).collect()
}

fn as_scoped(owned: &[(u32, Vec<quotagate::limiter::Limit>)]) -> Vec<Scope<'_>> {
    owned.iter().map(|(id, limits)| Scope::enforced(*id, limits)).collect()
}

fn store(c: &mut Criterion) {
    let config = config();
    let h = headers("tok-1");
    let fwd = Forwarded::from_headers(&h, "GET", "/").expect("a readable request");
    let open = config.policy.plan_named("open").expect("plan open");
    let tiny = config.policy.plan_named("tiny").expect("plan tiny");
    let open_limits = scoped(&config, open, &fwd);
    let tiny_limits = scoped(&config, tiny, &fwd);
    let open_scopes = as_scoped(&open_limits);
    let tiny_scopes = as_scoped(&tiny_limits);
    let keys = keys(&config, 100_000);

    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));

    let store = Memory::new(1_000_000);
    g.bench_function("hot_key_allowed", |b| {
        b.iter(|| store.check(black_box(keys[0]), &open_scopes, NOW, Counting::AllowedOnly).is_allowed())
    });
    g.bench_function("hot_key_denied", |b| {
        b.iter(|| store.check(black_box(keys[1]), &tiny_scopes, NOW, Counting::AllowedOnly).is_allowed())
    });

    // 100k live keys, visited in a scattered order so lookups miss the CPU caches as they would
    // with many callers.
    let many = Memory::new(1_000_000);
    for k in &keys {
        many.check(*k, &open_scopes, NOW, Counting::AllowedOnly);
    }
    let mut i = 0usize;
    g.bench_function("100k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            many.check(black_box(keys[i]), &open_scopes, NOW, Counting::AllowedOnly).is_allowed()
        })
    });

    // A key seen for the first time: the insert path (the 1,000,000-token wrk scenario). The
    // store holds at most 1,000,000 keys, so a long measurement also pays for evictions.
    let inserts = Memory::new(1_000_000);
    let mut fresh = 0u128;
    g.bench_function("new_key", |b| {
        b.iter(|| {
            // Scrambled like the keyed hashes real keys are, so no map sees sequential keys.
            fresh += 1;
            let key = Key(fresh.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
            inserts.check(key, &open_scopes, NOW, Counting::AllowedOnly).is_allowed()
        })
    });

    // The life of a request holding a concurrency slot: admitted under its ticket, then closed
    // with a reported cost (the closed-ticket marker, the slot freed, the cost charged).
    let slotted = [
        Limit::new(
            "concurrent",
            Algorithm::Concurrent { max: NonZeroU32::new(4).expect("4"), hold: 60 * SECOND },
        ),
        Limit::new("day", Algorithm::Fixed { requests: NonZeroU32::MAX, window: Window::Day }),
    ];
    let slotted_scopes = [Scope::enforced(0, &slotted)];
    let tickets = Memory::new(1_000_000);
    let mut ticket = 0u128;
    g.bench_function("ticket_check_and_close", |b| {
        b.iter(|| {
            ticket += 1;
            let allowed = tickets
                .check_ticket(keys[0], &slotted_scopes, NOW, Counting::AllowedOnly, ticket)
                .is_allowed();
            let closed = tickets.close(keys[0], ticket, NOW + 60 * SECOND, &slotted_scopes, 1, NOW);
            (allowed, closed)
        })
    });
    g.finish();

    // One key from several threads at once: the time per check with `threads` threads checking
    // the same (caller, scope) entry, i.e. contention on its lock and on moka's read path.
    let mut g = c.benchmark_group("store_contended");
    g.throughput(Throughput::Elements(1));
    for threads in [1usize, 2, 4] {
        g.bench_function(format!("one_key_{threads}_threads"), |b| {
            b.iter_custom(|iters| contended(&store, keys[0], &open_scopes, threads, iters))
        });
    }
    g.finish();
}

/// Wall time for `iters` checks of `key` split across `threads` threads, started together.
fn contended(store: &Memory, key: Key, scopes: &[Scope<'_>], threads: usize, iters: u64) -> Duration {
    let per_thread = iters.div_ceil(threads as u64);
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..per_thread {
                    black_box(store.check(key, scopes, NOW, Counting::AllowedOnly).is_allowed());
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let started = Instant::now();
        barrier.wait();
        started.elapsed()
    })
}

/// Everything a check does between the request's headers and the decision, as
/// `server::check::decide` does it, without building the response.
fn decide(c: &mut Criterion) {
    let config = config();
    let store = Memory::new(1_000_000);
    let tokens: Vec<HeaderMap> = (0..10_000).map(|i| headers(&format!("tok-{i}"))).collect();
    let mut i = 0usize;
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    g.bench_function("10k_tokens", |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            let h = &tokens[i];
            let fwd = Forwarded::from_headers(h, "GET", "/").expect("a readable request");
            let caller = config.identity.identify(h, &fwd, PEER).expect("a bearer token");
            let plan = config.policy.plan_of(&caller, h).expect("the default plan");
            match config.policy.applicable(plan, &fwd) {
                Applicable::Limited(scopes) => {
                    store.check(caller.key(), &scopes, NOW, Counting::AllowedOnly).is_allowed()
                }
                Applicable::Exempt(_) | Applicable::Unlimited => true,
            }
        })
    });
    g.finish();
}

/// Building the answers: a 200 with its five headers, a 429 with its headers and problem body.
fn responses(c: &mut Criterion) {
    let config = config();
    let store = Memory::new(1_000);
    let h = headers("tok-tiny");
    let fwd = Forwarded::from_headers(&h, "GET", "/").expect("a readable request");
    let caller = config.identity.identify(&h, &fwd, PEER).expect("a bearer token");
    let mut g = c.benchmark_group("response");
    for plan_name in ["open", "tiny"] {
        let plan_id = config.policy.plan_named(plan_name).expect("a bench plan");
        let plan = config.policy.plan(plan_id);
        let scopes = scopes(&config, plan_id, &fwd);
        store.check(caller.key(), &scopes, NOW, Counting::AllowedOnly);
        let decision = store.check(caller.key(), &scopes, NOW, Counting::AllowedOnly);
        let report = Report {
            plan,
            caller: &caller,
            verdicts: decision.verdicts(),
            ratelimit_on_allowed: true,
            ticket: None,
        };
        if decision.is_allowed() {
            g.bench_function("allowed_200", |b| b.iter(|| response::allowed(black_box(&report))));
        } else {
            g.bench_function("denied_429", |b| b.iter(|| response::denied(black_box(&report))));
        }
    }
    g.finish();
}

/// Counting one decision in the table built beside the config.
fn metrics(c: &mut Criterion) {
    let config = config();
    let metrics = Metrics::new();
    let decisions = metrics.decisions(&config.policy);
    let plan = config.policy.plan_named("open").expect("plan open");
    let mut g = c.benchmark_group("metrics");
    g.bench_function("decision_allowed", |b| {
        b.iter(|| black_box(&decisions).count(Outcome::allowed, Some(plan), None))
    });
    g.finish();
}

/// The whole handler through the router, without a socket: 10,000 tokens all allowed, and one
/// token always denied (429 with its body). Time per request, including building it.
fn handler(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let state = rt.block_on(async { AppState::new(config(), Clock::manual(NOW)) });
    let app = server::router(state, false);
    let request = |token: &str| {
        let mut req = Request::get("/").body(Body::empty()).expect("a valid request");
        *req.headers_mut() = headers(token);
        req
    };
    let mut g = c.benchmark_group("handler");
    g.throughput(Throughput::Elements(1));
    let tokens: Vec<String> = (0..10_000).map(|i| format!("tok-{i}")).collect();
    g.bench_function("10k_tokens_allowed", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    let token = &tokens[i as usize % tokens.len()];
                    let res = app.clone().oneshot(request(token)).await.expect("infallible");
                    black_box(res);
                }
                started.elapsed()
            })
        })
    });
    g.bench_function("one_token_denied", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let res = app.clone().oneshot(request("tok-tiny")).await.expect("infallible");
                    black_box(res);
                }
                started.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Short windows keep `cargo bench` to about a minute on a 2-core machine; criterion's
    // confidence intervals say when that is too short for a given comparison.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = identity, policy, store, decide, responses, metrics, handler
}
criterion_main!(benches);

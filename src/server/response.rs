//! Every status and header quotagate answers with, in one place.
//!
//! - 200: empty body; `RateLimit-Policy` and `RateLimit` (unless `answers.ratelimit_on_allowed`
//!   is off), `X-RateLimit-Limit`, `-Remaining`, `-Reset` for the most constrained limit,
//!   `X-Quotagate-Plan` and `X-Quotagate-Identity` (a fingerprint, never a token), and
//!   `X-Quotagate-Ticket` when the request got a ticket ([`crate::ticket`]), for Traefik's
//!   `authResponseHeaders` to copy to the backend.
//! - 429: `Retry-After` (whole seconds, rounded up), `RateLimit-Policy` and `RateLimit`, the
//!   `X-RateLimit-*` headers and an `application/problem+json` body of the registered type
//!   `quota-exceeded`, whose `violated-policies` are the violated items' names.
//! - 400 / 401: a problem+json body saying what is wrong with the credentials, or (400) with
//!   the forwarded request.
//! - On the tickets listener ([`super::tickets`]): 200 with what a close released and charged
//!   (JSON), and problem+json for a refused one: 400 (malformed or forged ticket, not a close
//!   request), 401 (bearer token), 404 (unknown, closed or expired ticket; no such endpoint),
//!   405, 408 (body too slow), 413 (body too large), 503 (store unavailable).
//!
//! `RateLimit-Policy` and `RateLimit` follow draft-ietf-httpapi-ratelimit-headers-11: one item
//! per enforced limit (dry-run limits are not enforced, so not advertised), named by the
//! limit's name, which config keeps unique among the limits one request can meet. An item's
//! `q`/`w` never promise more than the limit gives: for a bucket (GCRA) `q` is `burst` and `w`
//! the time to refill it, `burst * period / average`, rounded up to whole seconds; `r` is what
//! is left now and `t` the seconds until quota is available again (with `r=0`, the wait; else a
//! window's end, or a bucket's next token), which keeps every `r=0` item's `t` within
//! `Retry-After`. A concurrency limit's item has `q` = the requests it lets be in flight and
//! `qu="concurrent-requests"` (the draft's registered unit) instead of a `w`; its `r` is the
//! free slots and `t` the seconds until its oldest slot's `hold` ends.

use std::fmt::{self, Write as _};

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use smallvec::SmallVec;

use super::tickets::CloseError;
use crate::identity::{Caller, IdentityError};
use crate::limiter::{Verdict, SECOND};
use crate::policy::{Mode, Plan};
use crate::request::RequestError;
use crate::store::{Judged, StoreError};

static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static X_PLAN: HeaderName = HeaderName::from_static("x-quotagate-plan");
static X_IDENTITY: HeaderName = HeaderName::from_static("x-quotagate-identity");
static X_TICKET: HeaderName = HeaderName::from_static("x-quotagate-ticket");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const PROBLEM_JSON: &str = "application/problem+json";
/// The problem type of draft-ietf-httpapi-ratelimit-headers, section 5.
const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// Headers on a 200 with limit information, and on a 429 (with its body): the maps are made
/// this size at once instead of growing (and rehashing) on the way.
const ALLOWED_HEADERS: usize = 8;
const DENIED_HEADERS: usize = 10;

/// Whole seconds, rounded up: a client told to wait this long never comes back too early.
pub fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(SECOND)
}

/// One decided request, for building its answer. Only the enforced verdicts speak in the
/// answer; the dry-run ones are for logs and metrics.
pub struct Report<'a> {
    pub plan: &'a Plan,
    pub caller: &'a Caller,
    /// The store's verdicts, enforced and dry-run, each with its limit.
    pub verdicts: &'a [Judged<'a>],
    /// Whether a 200 carries `RateLimit-Policy` and `RateLimit` (`answers.ratelimit_on_allowed`).
    pub ratelimit_on_allowed: bool,
    /// The ticket a 200 hands the backend (`X-Quotagate-Ticket`), if the request got one.
    pub ticket: Option<&'a str>,
}

impl<'a> Report<'a> {
    fn enforced(&self) -> impl Iterator<Item = &'a Judged<'a>> {
        self.verdicts.iter().filter(|j| j.mode == Mode::Enforce)
    }

    fn violated(&self, mode: Mode) -> impl Iterator<Item = &'a Judged<'a>> {
        self.verdicts.iter().filter(move |j| j.mode == mode && !j.verdict.allowed)
    }

    /// The verdict the `X-RateLimit-*` headers of a 200 speak of: the enforced limit with the
    /// fewest requests left (the latest reset on ties).
    fn tightest(&self) -> Option<&'a Judged<'a>> {
        self.enforced().min_by_key(|j| (j.verdict.remaining, std::cmp::Reverse(j.verdict.reset)))
    }

    /// The violated limit of `mode` with the longest wait: for a 429 (enforced), the one its
    /// headers speak of; for dry run, the one reported.
    pub fn worst(&self, mode: Mode) -> Option<&'a Judged<'a>> {
        self.violated(mode).max_by_key(|j| j.verdict.retry_after)
    }

    /// The violated limits' names of `mode`, comma-separated (for logs), written when displayed.
    pub fn violated_names(&self, mode: Mode) -> ViolatedNames<'_> {
        ViolatedNames(self, mode)
    }
}

/// See [`Report::violated_names`].
pub struct ViolatedNames<'a>(&'a Report<'a>, Mode);

impl fmt::Display for ViolatedNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, j) in self.0.violated(self.1).enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            f.write_str(&j.limit.name)?;
        }
        Ok(())
    }
}

/// A header value's text, on the stack unless unusually long, so that the value itself is the
/// only allocation (`HeaderValue::from_bytes` copies into an exact-size buffer, where
/// `HeaderValue::from(u64)` or a `String` turned into one allocate twice).
#[derive(Default)]
struct Text(SmallVec<[u8; 128]>);

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Text {
    fn value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(&self.0).ok()
    }
}

/// "00" to "99": the numbers below 100 as static header values, which cost no allocation.
const PAIRS: &str = "00010203040506070809101112131415161718192021222324252627282930313233343536373839\
                     40414243444546474849505152535455565758596061626364656667686970717273747576777879\
                     8081828384858687888990919293949596979899";

fn number(n: u64) -> HeaderValue {
    match usize::try_from(n) {
        Ok(n @ 0..10) => HeaderValue::from_static(&PAIRS[2 * n + 1..2 * n + 2]),
        Ok(n @ 10..100) => HeaderValue::from_static(&PAIRS[2 * n..2 * n + 2]),
        _ => HeaderValue::from_str(itoa::Buffer::new().format(n)).expect("digits are a valid header value"),
    }
}

/// A structured-field string: `"name"` with `\` and `"` escaped.
fn sf_string(out: &mut Text, s: &str) {
    out.0.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.0.push(b'\\');
        }
        out.0.push(b);
    }
    out.0.push(b'"');
}

/// `caller` as its `Display` writes it, into a stack buffer: no allocation but the value's.
fn identity_value(caller: &Caller) -> Option<HeaderValue> {
    let mut text = Text::default();
    write!(text, "{caller}").ok()?;
    text.value()
}

fn identity_headers(headers: &mut HeaderMap, plan: Option<&Plan>, caller: Option<&Caller>) {
    if let Some(v) = plan.and_then(|p| p.header.clone()) {
        headers.insert(X_PLAN.clone(), v);
    }
    if let Some(v) = caller.and_then(identity_value) {
        headers.insert(X_IDENTITY.clone(), v);
    }
}

fn x_ratelimit(headers: &mut HeaderMap, v: &Verdict) {
    headers.insert(X_LIMIT.clone(), number(u64::from(v.quota)));
    headers.insert(X_REMAINING.clone(), number(u64::from(v.remaining)));
    headers.insert(X_RESET.clone(), number(ceil_secs(v.reset)));
}

/// `RateLimit-Policy` and `RateLimit`: one item per enforced verdict, in the same order, each
/// written into one stack buffer per field (a single allocation each, for the value).
fn ratelimit_fields(headers: &mut HeaderMap, report: &Report<'_>) {
    let mut policy = Text::default();
    let mut state = Text::default();
    let mut digits = itoa::Buffer::new();
    for (i, j) in report.enforced().enumerate() {
        if i > 0 {
            policy.0.extend_from_slice(b", ");
            state.0.extend_from_slice(b", ");
        }
        let v = &j.verdict;
        sf_string(&mut policy, &j.limit.name);
        policy.0.extend_from_slice(b";q=");
        policy.0.extend_from_slice(digits.format(v.quota).as_bytes());
        if j.limit.is_concurrent() {
            // A quota of requests in flight has no window: the draft's registered unit says so.
            policy.0.extend_from_slice(b";qu=\"concurrent-requests\"");
        } else {
            policy.0.extend_from_slice(b";w=");
            policy.0.extend_from_slice(digits.format(policy_window(v)).as_bytes());
        }
        sf_string(&mut state, &j.limit.name);
        state.0.extend_from_slice(b";r=");
        state.0.extend_from_slice(digits.format(v.remaining).as_bytes());
        state.0.extend_from_slice(b";t=");
        state.0.extend_from_slice(digits.format(ceil_secs(j.limit.available_in(v))).as_bytes());
    }
    if policy.0.is_empty() {
        return;
    }
    headers.insert(RATELIMIT_POLICY.clone(), policy.value().expect("names are header-safe"));
    headers.insert(RATELIMIT.clone(), state.value().expect("names are header-safe"));
}

/// An item's `w`: its window in whole seconds, rounded up (at least 1). Rounding up lowers the
/// advertised rate `q / w`, never raises it.
fn policy_window(v: &Verdict) -> u64 {
    ceil_secs(v.window).max(1)
}

/// 200 with no limit information: exempt, unlimited or allow-listed.
pub fn pass(plan: Option<&Plan>, caller: Option<&Caller>) -> Response {
    let mut res = Response::new(Body::empty());
    identity_headers(res.headers_mut(), plan, caller);
    res
}

/// 200 for a request within its limits.
pub fn allowed(report: &Report<'_>) -> Response {
    let mut res = Response::new(Body::empty());
    let h = res.headers_mut();
    *h = HeaderMap::with_capacity(ALLOWED_HEADERS);
    identity_headers(h, Some(report.plan), Some(report.caller));
    if let Some(j) = report.tightest() {
        x_ratelimit(h, &j.verdict);
    }
    if report.ratelimit_on_allowed {
        ratelimit_fields(h, report);
    }
    if let Some(ticket) = report.ticket.and_then(|t| HeaderValue::from_str(t).ok()) {
        h.insert(X_TICKET.clone(), ticket);
    }
    res
}

/// The 429 body (RFC 9457, the draft's `quota-exceeded` type). Members in alphabetical order,
/// as a `serde_json::Value` (a `BTreeMap`) would write them.
#[derive(Serialize)]
struct Denied<'a> {
    detail: DeniedDetail<'a>,
    plan: &'a str,
    retry_after_seconds: u64,
    status: u16,
    title: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "violated-policies")]
    violated_policies: ViolatedPolicies<'a>,
}

/// The violated enforced limits' names, as their items are named in `RateLimit-Policy`.
struct ViolatedPolicies<'a>(&'a Report<'a>);

impl Serialize for ViolatedPolicies<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.violated(Mode::Enforce).map(|j| &*j.limit.name))
    }
}

/// `rate limit exceeded (NAMES) for plan PLAN; retry in N s`, written straight into the body.
struct DeniedDetail<'a> {
    report: &'a Report<'a>,
    retry_after: u64,
}

impl fmt::Display for DeniedDetail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (names, plan, retry_after) =
            (self.report.violated_names(Mode::Enforce), &self.report.plan.name, self.retry_after);
        write!(f, "rate limit exceeded ({names}) for plan {plan}; retry in {retry_after} s")
    }
}

impl Serialize for DeniedDetail<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// 429 for a request over an enforced limit.
pub fn denied(report: &Report<'_>) -> Response {
    let worst = report.worst(Mode::Enforce).expect("a denied request violates an enforced limit");
    // Every enforced limit must admit the next request, not only the violated ones: with
    // `count_denied` this request may have taken an allowed limit's last one. An item with
    // `r=0` has `t = ceil(retry_after)`, so no such `t` is later than this.
    let wait = report.enforced().map(|j| j.verdict.retry_after).max().unwrap_or(0);
    let retry_after = ceil_secs(wait).max(1);
    let body = Denied {
        detail: DeniedDetail { report, retry_after },
        plan: &report.plan.name,
        retry_after_seconds: retry_after,
        status: 429,
        title: "Request cannot be satisfied as assigned quota has been exceeded",
        kind: QUOTA_EXCEEDED,
        violated_policies: ViolatedPolicies(report),
    };
    let mut json = Vec::with_capacity(512);
    serde_json::to_writer(&mut json, &body).expect("the body serialises");
    let mut res = Response::new(Body::from(json));
    *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = res.headers_mut();
    *h = HeaderMap::with_capacity(DENIED_HEADERS);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    h.insert(RETRY_AFTER, number(retry_after));
    ratelimit_fields(h, report);
    x_ratelimit(h, &worst.verdict);
    identity_headers(h, Some(report.plan), Some(report.caller));
    res
}

fn problem_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res
}

/// A problem+json body of `kind` with its status's reason as the title.
fn problem(status: StatusCode, kind: &str, detail: &str) -> Response {
    let body = json!({
        "type": kind,
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    problem_response(status, &body)
}

/// 401 for a missing token, 400 for a malformed or oversized one, or for two different ones.
pub fn unidentified(e: &IdentityError) -> Response {
    let (status, challenge) = match e {
        IdentityError::Missing { .. } => (StatusCode::UNAUTHORIZED, "Bearer realm=\"api\""),
        IdentityError::TooLong { .. } | IdentityError::Malformed { .. } | IdentityError::Ambiguous { .. } => {
            (StatusCode::BAD_REQUEST, "Bearer realm=\"api\", error=\"invalid_request\"")
        }
    };
    let kind = match e {
        IdentityError::Ambiguous { .. } => "urn:quotagate:ambiguous-credentials",
        _ => "urn:quotagate:invalid-credentials",
    };
    let mut res = problem(status, kind, &e.to_string());
    res.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    res
}

/// 400 for a forwarded request that cannot be read without guessing: a repeated or missing
/// `X-Forwarded-*` header, an encoded NUL in the path.
pub fn bad_request(e: &RequestError) -> Response {
    problem(StatusCode::BAD_REQUEST, "urn:quotagate:ambiguous-request", &e.to_string())
}

/// 401 for a token the config does not know, with `defaults.unknown_tokens = "reject"`.
pub fn unknown_token(caller: &Caller) -> Response {
    let detail = format!("unknown API token ({caller})");
    let mut res = problem(StatusCode::UNAUTHORIZED, "urn:quotagate:unknown-token", &detail);
    res.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"api\", error=\"invalid_token\""));
    res
}

/// 503 when the store cannot decide and `on_error = "deny"`.
pub fn unavailable(e: &StoreError) -> Response {
    let retry_after = match e {
        StoreError::Unavailable { retry_after } => {
            ceil_secs(u64::try_from(retry_after.as_nanos()).unwrap_or(u64::MAX))
        }
    }
    .max(1);
    let body = json!({
        "type": "urn:quotagate:store-unavailable",
        "title": "Service Unavailable",
        "status": 503,
        "detail": format!("{e}; retry in {retry_after} s"),
        "retry_after_seconds": retry_after,
    });
    let mut res = problem_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    res.headers_mut().insert(RETRY_AFTER, number(retry_after));
    res
}

/// One limit a ticket's close charged, as the 200 body lists it.
#[derive(Debug, Serialize)]
pub struct Charged {
    name: String,
    /// What the limit was charged: the reported cost.
    cost: u32,
    /// What it has left after the charge.
    remaining: u32,
}

impl Charged {
    /// The charge of a reported `cost` to the limit of `j`, its verdict read after the charge.
    pub fn of(j: &Judged<'_>, cost: u32) -> Charged {
        Charged { name: j.limit.name.to_string(), cost: j.limit.weight(cost), remaining: j.verdict.remaining }
    }
}

/// 200 for a ticket closed now: `{"closed": true, "released": N, "charged": [...]}`.
pub fn ticket_closed(released: u32, charged: &[Charged]) -> Response {
    let body = json!({ "closed": true, "released": released, "charged": charged });
    let mut res = Response::new(Body::from(body.to_string()));
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// The problem+json answer to a close that did nothing.
pub fn close_refused(e: &CloseError) -> Response {
    let (status, kind) = match e {
        CloseError::Unauthorized => (StatusCode::UNAUTHORIZED, "urn:quotagate:tickets-unauthorized"),
        CloseError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "urn:quotagate:body-too-large"),
        CloseError::Slow(_) => (StatusCode::REQUEST_TIMEOUT, "urn:quotagate:body-timeout"),
        CloseError::Body(_) | CloseError::Cost(_) => {
            (StatusCode::BAD_REQUEST, "urn:quotagate:invalid-close-request")
        }
        CloseError::Ticket(_) => (StatusCode::BAD_REQUEST, "urn:quotagate:invalid-ticket"),
        CloseError::Unknown => (StatusCode::NOT_FOUND, "urn:quotagate:unknown-ticket"),
        CloseError::Store(e) => return unavailable(e),
    };
    let mut res = problem(status, kind, &e.to_string());
    if matches!(e, CloseError::Unauthorized) {
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"quotagate-tickets\""));
    }
    res
}

/// 404 for a path the tickets listener does not serve.
pub fn no_such_endpoint() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "urn:quotagate:not-found",
        "this listener serves POST /v1/tickets/close and GET /healthz only",
    )
}

/// 405 for `/v1/tickets/close` asked with another method than POST.
pub fn post_only() -> Response {
    let mut res = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "urn:quotagate:method-not-allowed",
        "close a ticket with POST",
    );
    res.headers_mut().insert(axum::http::header::ALLOW, HeaderValue::from_static("POST"));
    res
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::identity::Key;
    use crate::limiter::tests::hit;
    use crate::limiter::{Algorithm, Limit, Nanos, State, Window};

    #[test]
    fn numbers_read_the_same_from_the_table_and_from_digits() {
        for n in [0, 1, 9, 10, 42, 99, 100, 101, 86_400, u64::MAX] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
    }

    #[test]
    fn the_identity_header_is_the_callers_display() {
        let key = Key(0x1a2b_3c4d_0000_0000_0000_0000_0000_0000);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for caller in [Caller::Token(key), Caller::Host(Key(7 << 96)), Caller::Ip(ip, key)] {
            assert_eq!(identity_value(&caller).unwrap(), caller.to_string().as_str());
        }
    }

    /// An independent reading of a `RateLimit` or `RateLimit-Policy` value (the `sfv` crate):
    /// each item as `name k=v ...` (a string parameter unquoted).
    fn sf_items(res: &Response, field: &HeaderName) -> Vec<String> {
        let value = res.headers().get(field).unwrap_or_else(|| panic!("no {field}")).to_str().unwrap();
        let list: sfv::List = sfv::Parser::new(value).parse().unwrap();
        list.iter()
            .map(|entry| {
                let sfv::ListEntry::Item(item) = entry else { panic!("an inner list in {value}") };
                let mut out = item.bare_item.as_string().expect("a string").as_str().to_owned();
                for (k, v) in &item.params {
                    match (v.as_integer(), v.as_string()) {
                        (Some(n), _) => out.push_str(&format!(" {}={}", k.as_str(), i64::from(n))),
                        (None, Some(s)) => out.push_str(&format!(" {}={}", k.as_str(), s.as_str())),
                        _ => panic!("{} in {value} is neither an integer nor a string", k.as_str()),
                    }
                }
                out
            })
            .collect()
    }

    fn gcra(average: u32, period: Nanos, burst: u32) -> Algorithm {
        Algorithm::Gcra {
            emission: period / u64::from(average),
            burst: std::num::NonZeroU32::new(burst).unwrap(),
            max_delay: 0,
        }
    }

    fn judged<'a>(limit: &'a Limit, verdict: Verdict) -> Judged<'a> {
        Judged { limit, rule: None, mode: Mode::Enforce, verdict }
    }

    fn report<'a>(plan: &'a Plan, caller: &'a Caller, verdicts: &'a [Judged<'a>]) -> Report<'a> {
        Report { plan, caller, verdicts, ratelimit_on_allowed: true, ticket: None }
    }

    #[test]
    fn the_429_body_is_a_quota_exceeded_problem_naming_the_violated_policies() {
        let limits =
            [Limit::new("minute", gcra(1, SECOND, 10)), Limit::new("d\"a\\y", gcra(1, SECOND, 1000))];
        let verdict = |allowed, quota, retry_after| Verdict {
            allowed,
            quota,
            remaining: 0,
            reset: 42 * SECOND,
            retry_after,
            wait: 0,
            window: 60 * SECOND,
        };
        let verdicts = [
            judged(&limits[0], verdict(false, 10, 41_700_000_000)),
            judged(&limits[1], verdict(false, 1000, 17_000 * SECOND)),
        ];
        let plan = Plan::new("fr\"ee", false, limits.to_vec());
        let caller = Caller::Token(Key(1));
        let res = denied(&report(&plan, &caller, &verdicts));
        assert_eq!(sf_items(&res, &RATELIMIT_POLICY), ["minute q=10 w=60", "d\"a\\y q=1000 w=60"]);
        let body = futures_body(res);
        let expected = json!({
            "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
            "title": "Request cannot be satisfied as assigned quota has been exceeded",
            "status": 429,
            "detail": "rate limit exceeded (minute,d\"a\\y) for plan fr\"ee; retry in 17000 s",
            "plan": "fr\"ee",
            "violated-policies": ["minute", "d\"a\\y"],
            "retry_after_seconds": 17000,
        });
        assert_eq!(body, expected.to_string());
    }

    /// 2026-11-23 19:05:00 UTC: a whole minute.
    const T0: Nanos = 1_795_460_700 * SECOND;

    #[test]
    fn no_item_with_nothing_left_is_available_later_than_retry_after() {
        // A sliding minute of 3 whose previous minute counted 4, half a minute in: the previous
        // minute weighs 2, so this request takes the last one. The window ends in 30 s, but the
        // weight drops enough to admit one more in 15 s: that is when its quota is back.
        let sliding = Limit::new(
            "minute",
            Algorithm::Sliding { requests: std::num::NonZeroU32::new(3).unwrap(), window: Window::Minute },
        );
        let mut state = State { at: T0 + 60 * SECOND, count: 0, previous: 4 };
        let now = T0 + 30 * SECOND;
        let last = hit(&sliding, &mut state, now);
        assert!(last.allowed);
        assert_eq!((last.remaining, last.retry_after, last.reset), (0, 15 * SECOND, 30 * SECOND));
        // A second that is full denies the request, for half a second.
        let second = Limit::new(
            "second",
            Algorithm::Fixed { requests: std::num::NonZeroU32::new(1).unwrap(), window: Window::Second },
        );
        let mut state = State::default();
        hit(&second, &mut state, now - SECOND / 2);
        let denied_v = hit(&second, &mut state, now - SECOND / 2);
        assert!(!denied_v.allowed);
        let verdicts = [judged(&sliding, last), judged(&second, denied_v)];
        let plan = Plan::new("free", false, vec![sliding.clone(), second.clone()]);
        let caller = Caller::Token(Key(1));
        let res = denied(&report(&plan, &caller, &verdicts));
        assert_eq!(res.headers()[RETRY_AFTER], "15");
        assert_eq!(sf_items(&res, &RATELIMIT), ["minute r=0 t=15", "second r=0 t=1"]);
    }

    #[test]
    fn a_bucket_item_waits_for_the_next_token_not_the_full_bucket() {
        // average = 1, period = 2s, burst = 5: one token every 2 s, a full bucket in 10 s.
        let bucket = Limit::new("bucket", gcra(1, 2 * SECOND, 5));
        let plan = Plan::new("free", false, vec![bucket.clone()]);
        let caller = Caller::Token(Key(1));
        let mut state = State::default();
        hit(&bucket, &mut state, T0);
        hit(&bucket, &mut state, T0);
        let third = hit(&bucket, &mut state, T0);
        assert_eq!((third.remaining, third.reset), (2, 6 * SECOND));
        let verdicts = [judged(&bucket, third)];
        let res = allowed(&report(&plan, &caller, &verdicts));
        assert_eq!(sf_items(&res, &RATELIMIT_POLICY), ["bucket q=5 w=10"]);
        assert_eq!(
            sf_items(&res, &RATELIMIT),
            ["bucket r=2 t=2"],
            "2 s to the next token, not 6 s to a full bucket"
        );
        for _ in 0..2 {
            hit(&bucket, &mut state, T0);
        }
        let over = hit(&bucket, &mut state, T0 + SECOND / 2);
        let verdicts = [judged(&bucket, over)];
        let res = denied(&report(&plan, &caller, &verdicts));
        assert_eq!(sf_items(&res, &RATELIMIT), ["bucket r=0 t=2"], "1.5 s to the next token, not 9.5 s");
        assert_eq!(res.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn a_buckets_policy_never_promises_more_than_the_bucket_gives() {
        // For a spread of buckets: a client that finds r = q and spends q at once is admitted
        // every time, and after waiting w it can do so again: q per w is really available, and
        // q / w is never above average / period.
        let cases = [
            (100, SECOND, 50),
            (100, SECOND, 1),
            (50, SECOND / 2, 10),
            (1, 60 * SECOND, 3),
            (3, 2 * SECOND, 2),
            (7, 3 * SECOND, 700),
            (1, SECOND, 1),
        ];
        for (average, period, burst) in cases {
            let limit = Limit::new("b", gcra(average, period, burst));
            let plan = Plan::new("free", false, vec![limit.clone()]);
            let caller = Caller::Token(Key(1));
            let mut state = State::default();
            let v = limit.verdict(&state, T0, true, 1);
            let verdicts = [judged(&limit, v)];
            let items = sf_items(&allowed(&report(&plan, &caller, &verdicts)), &RATELIMIT_POLICY);
            let [item] = &items[..] else { panic!("{items:?}") };
            let mut params =
                item.split(' ').skip(1).map(|p| p.split_once('=').unwrap().1.parse::<u64>().unwrap());
            let (q, w) = (params.next().unwrap(), params.next().unwrap());
            let case = format!("average {average}, period {period} ns, burst {burst}: q={q};w={w}");
            assert!(
                u128::from(q) * u128::from(period) <= u128::from(average) * u128::from(w * SECOND),
                "{case}: above the rate"
            );
            assert!(q <= u64::from(burst), "{case}: more at once than the bucket holds");
            let mut now = T0;
            for round in 0..3 {
                for i in 0..q {
                    assert!(hit(&limit, &mut state, now).allowed, "{case}: round {round}, request {i}");
                }
                now += w * SECOND;
            }
        }
    }

    #[test]
    fn a_200_carries_the_fields_unless_switched_off() {
        let minute = Limit::new(
            "minute",
            Algorithm::Fixed { requests: std::num::NonZeroU32::new(10).unwrap(), window: Window::Minute },
        );
        let plan = Plan::new("free", false, vec![minute.clone()]);
        let caller = Caller::Token(Key(1));
        let mut state = State::default();
        let v = hit(&minute, &mut state, T0 + 18 * SECOND);
        let dry = Judged { mode: Mode::DryRun, ..judged(&minute, v) };
        let verdicts = [judged(&minute, v), dry];
        let mut r = report(&plan, &caller, &verdicts);
        let res = allowed(&r);
        assert_eq!(sf_items(&res, &RATELIMIT_POLICY), ["minute q=10 w=60"], "dry run is not advertised");
        assert_eq!(sf_items(&res, &RATELIMIT), ["minute r=9 t=42"]);
        r.ratelimit_on_allowed = false;
        let res = allowed(&r);
        assert!(!res.headers().contains_key(&RATELIMIT) && !res.headers().contains_key(&RATELIMIT_POLICY));
        assert_eq!(res.headers()[&X_REMAINING], "9");
    }

    fn concurrent(max: u32) -> Limit {
        Limit::new(
            "concurrent",
            Algorithm::Concurrent { max: std::num::NonZeroU32::new(max).unwrap(), hold: 120 * SECOND },
        )
    }

    /// A concurrency limit's verdict as a store gives it: `free` slots left after the request,
    /// the oldest slot's hold ending in `oldest_ends`.
    fn slots(allowed: bool, max: u32, free: u32, oldest_ends: Nanos) -> Verdict {
        let retry_after = if free == 0 { oldest_ends } else { 0 };
        Verdict {
            allowed,
            quota: max,
            remaining: free,
            reset: oldest_ends,
            retry_after,
            wait: 0,
            window: 120 * SECOND,
        }
    }

    #[test]
    fn a_concurrency_denial_speaks_of_requests_in_flight_and_waits_for_the_oldest_slot() {
        let minute = Limit::new(
            "minute",
            Algorithm::Fixed { requests: std::num::NonZeroU32::new(10).unwrap(), window: Window::Minute },
        );
        let slots_limit = concurrent(2);
        let mut state = State::default();
        let v = hit(&minute, &mut state, T0 + 18 * SECOND);
        let verdicts = [judged(&minute, v), judged(&slots_limit, slots(false, 2, 0, 37_200_000_000))];
        let plan = Plan::new("pro", false, vec![minute.clone(), slots_limit.clone()]);
        let caller = Caller::Token(Key(1));
        let res = denied(&report(&plan, &caller, &verdicts));
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            sf_items(&res, &RATELIMIT_POLICY),
            ["minute q=10 w=60", "concurrent q=2 qu=concurrent-requests"],
            "no w for a concurrency limit"
        );
        assert_eq!(sf_items(&res, &RATELIMIT), ["minute r=9 t=42", "concurrent r=0 t=38"]);
        assert_eq!(res.headers()[RETRY_AFTER], "38", "until the oldest slot's hold ends, rounded up");
        let body: serde_json::Value = serde_json::from_str(&futures_body(res)).unwrap();
        assert_eq!(body["violated-policies"], json!(["concurrent"]));
        assert_eq!(body["retry_after_seconds"], 38);
    }

    #[test]
    fn a_concurrency_denial_waits_at_least_a_second() {
        let limit = concurrent(1);
        let verdicts = [judged(&limit, slots(false, 1, 0, SECOND / 5))];
        let plan = Plan::new("pro", false, vec![limit.clone()]);
        let caller = Caller::Token(Key(1));
        let res = denied(&report(&plan, &caller, &verdicts));
        assert_eq!(res.headers()[RETRY_AFTER], "1");
        assert_eq!(sf_items(&res, &RATELIMIT), ["concurrent r=0 t=1"]);
    }

    #[test]
    fn an_admitted_request_carries_its_ticket_and_the_free_slots() {
        let limit = concurrent(4);
        let verdicts = [judged(&limit, slots(true, 4, 3, 120 * SECOND))];
        let plan = Plan::new("pro", false, vec![limit.clone()]);
        let caller = Caller::Token(Key(1));
        let mut r = report(&plan, &caller, &verdicts);
        let res = allowed(&r);
        assert!(!res.headers().contains_key(&X_TICKET), "no ticket given, none sent");
        r.ticket = Some("qt1.AAAA");
        let res = allowed(&r);
        assert_eq!(res.headers()[&X_TICKET], "qt1.AAAA");
        assert_eq!(sf_items(&res, &RATELIMIT_POLICY), ["concurrent q=4 qu=concurrent-requests"]);
        assert_eq!(sf_items(&res, &RATELIMIT), ["concurrent r=3 t=120"]);
        assert_eq!(
            (res.headers()[&X_LIMIT].to_str().unwrap(), res.headers()[&X_REMAINING].to_str().unwrap()),
            ("4", "3")
        );
    }

    fn futures_body(res: Response) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(res.into_body(), usize::MAX))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}

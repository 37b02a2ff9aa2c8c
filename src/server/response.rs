//! Every status and header quotagate answers with, in one place.
//!
//! - 200: empty body; `X-RateLimit-Limit`, `-Remaining`, `-Reset` for the most constrained
//!   limit, `X-Quotagate-Plan` and `X-Quotagate-Identity` (a fingerprint, never a token), for
//!   Traefik's `authResponseHeaders` to copy to the backend.
//! - 429: `Retry-After` (whole seconds, rounded up), `RateLimit-Policy` and `RateLimit` (IETF
//!   draft structured fields, one item per limit), the `X-RateLimit-*` headers and an
//!   `application/problem+json` body naming the violated limits.
//! - 400 / 401: a problem+json body saying what is wrong with the credentials.

use std::fmt::Write as _;

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

use crate::identity::{Caller, IdentityError};
use crate::limiter::{Verdict, SECOND};
use crate::policy::{Rule, Scope};
use crate::store::{Decision, Judged, StoreError};

static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static X_PLAN: HeaderName = HeaderName::from_static("x-quotagate-plan");
static X_IDENTITY: HeaderName = HeaderName::from_static("x-quotagate-identity");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const PROBLEM_JSON: &str = "application/problem+json";

/// Whole seconds, rounded up: a client told to wait this long never comes back too early.
pub fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(SECOND)
}

/// One decided request, for building its answer.
pub struct Report<'a> {
    pub plan: &'a str,
    pub caller: &'a Caller,
    pub scopes: &'a [Scope<'a>],
    pub decision: &'a Decision,
}

impl Report<'_> {
    fn name(&self, j: &Judged) -> &str {
        &self.scopes[usize::from(j.scope)].limits[usize::from(j.limit)].name
    }

    fn violated(&self) -> impl Iterator<Item = &Judged> {
        self.decision.verdicts.iter().filter(|j| !j.verdict.allowed)
    }

    /// The verdict the `X-RateLimit-*` headers speak of: if denied, the violated limit with the
    /// longest wait; otherwise the limit with the fewest requests left (the latest reset on ties).
    fn most_constrained(&self) -> Option<&Judged> {
        if self.decision.allowed {
            self.decision
                .verdicts
                .iter()
                .min_by_key(|j| (j.verdict.remaining, std::cmp::Reverse(j.verdict.reset)))
        } else {
            self.violated().max_by_key(|j| j.verdict.retry_after)
        }
    }

    /// The rule of the violated limit with the longest wait, if it belongs to a rule.
    pub fn denying_rule(&self) -> Option<&Rule> {
        let j = self.most_constrained()?;
        self.scopes[usize::from(j.scope)].rule
    }

    /// The violated limits' names, comma-separated (for logs).
    pub fn violated_names(&self) -> String {
        self.violated().map(|j| self.name(j)).collect::<Vec<_>>().join(",")
    }
}

fn number(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

/// A structured-field string: `"name"` with `\` and `"` escaped.
fn sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn identity_headers(headers: &mut HeaderMap, plan: Option<&str>, caller: Option<&Caller>) {
    if let Some(v) = plan.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(X_PLAN.clone(), v);
    }
    if let Some(v) = caller.and_then(|c| HeaderValue::from_str(&c.to_string()).ok()) {
        headers.insert(X_IDENTITY.clone(), v);
    }
}

fn x_ratelimit(headers: &mut HeaderMap, v: &Verdict) {
    headers.insert(X_LIMIT.clone(), number(u64::from(v.quota)));
    headers.insert(X_REMAINING.clone(), number(u64::from(v.remaining)));
    headers.insert(X_RESET.clone(), number(ceil_secs(v.reset)));
}

/// 200 with no limit information: exempt, unlimited or allow-listed.
pub fn pass(plan: Option<&str>, caller: Option<&Caller>) -> Response {
    let mut res = Response::new(Body::empty());
    identity_headers(res.headers_mut(), plan, caller);
    res
}

/// 200 for a request within its limits.
pub fn allowed(report: &Report<'_>) -> Response {
    let mut res = pass(Some(report.plan), Some(report.caller));
    if let Some(j) = report.most_constrained() {
        x_ratelimit(res.headers_mut(), &j.verdict);
    }
    res
}

/// 429 for a request over a limit.
pub fn denied(report: &Report<'_>) -> Response {
    let mut policy = String::with_capacity(64);
    let mut state = String::with_capacity(64);
    for (i, j) in report.decision.verdicts.iter().enumerate() {
        if i > 0 {
            policy.push_str(", ");
            state.push_str(", ");
        }
        let v = &j.verdict;
        let name = report.name(j);
        sf_string(&mut policy, name);
        let _ = write!(policy, ";q={};w={}", v.quota, ceil_secs(v.window).max(1));
        sf_string(&mut state, name);
        let wait = if v.allowed { v.reset } else { v.retry_after };
        let _ = write!(state, ";r={};t={}", v.remaining, ceil_secs(wait));
    }
    let worst = report.most_constrained().expect("a denied request violates a limit");
    let retry_after = ceil_secs(worst.verdict.retry_after).max(1);
    let violated: Vec<_> = report
        .violated()
        .map(|j| {
            json!({
                "name": report.name(j),
                "quota": j.verdict.quota,
                "window_seconds": ceil_secs(j.verdict.window).max(1),
                "retry_after_seconds": ceil_secs(j.verdict.retry_after).max(1),
            })
        })
        .collect();
    let names = report.violated_names();
    let body = json!({
        "type": "urn:quotagate:rate-limited",
        "title": "Too Many Requests",
        "status": 429,
        "detail": format!("rate limit exceeded ({names}) for plan {}; retry in {retry_after} s", report.plan),
        "plan": report.plan,
        "violated": violated,
        "retry_after_seconds": retry_after,
    });
    let mut res = problem_response(StatusCode::TOO_MANY_REQUESTS, &body);
    let h = res.headers_mut();
    h.insert(RETRY_AFTER, number(retry_after));
    h.insert(RATELIMIT_POLICY.clone(), HeaderValue::from_str(&policy).expect("names are header-safe"));
    h.insert(RATELIMIT.clone(), HeaderValue::from_str(&state).expect("names are header-safe"));
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

/// 401 for a missing token, 400 for a malformed or oversized one.
pub fn unidentified(e: &IdentityError) -> Response {
    let (status, title, challenge) = match e {
        IdentityError::Missing { .. } => (StatusCode::UNAUTHORIZED, "Unauthorized", "Bearer realm=\"api\""),
        IdentityError::TooLong { .. } | IdentityError::Malformed { .. } => {
            (StatusCode::BAD_REQUEST, "Bad Request", "Bearer realm=\"api\", error=\"invalid_request\"")
        }
    };
    let body = json!({
        "type": "urn:quotagate:invalid-credentials",
        "title": title,
        "status": status.as_u16(),
        "detail": e.to_string(),
    });
    let mut res = problem_response(status, &body);
    res.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    res
}

/// 401 for a token the config does not know, with `defaults.unknown_tokens = "reject"`.
pub fn unknown_token(caller: &Caller) -> Response {
    let body = json!({
        "type": "urn:quotagate:unknown-token",
        "title": "Unauthorized",
        "status": 401,
        "detail": format!("unknown API token ({caller})"),
    });
    let mut res = problem_response(StatusCode::UNAUTHORIZED, &body);
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
        StoreError::Protocol => 1,
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

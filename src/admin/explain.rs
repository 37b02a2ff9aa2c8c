//! `POST /v1/explain`: the whole decision on one request, without counting it. The body
//! describes the request as Traefik would forward it (`method`, `host`, `uri`, its other
//! `headers`, and the `peer` that connects to quotagate); it is turned into the very headers a
//! check reads ([`forwarded_headers`]) and decided by the check's own path in its peeking mode
//! ([`crate::server::check::decide`] with [`crate::server::check::Run::Explain`]), so an
//! explanation can only say what a check would do.
//!
//! The answer says who the caller is (or why none), its plan and where it came from, every rule
//! and whether (and why) it matched, each limit's state before the request, and the status,
//! headers and body the check would answer now. A ticket a check would issue is not minted:
//! its header says so instead.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::usage::limit_state;
use super::{answer, ApiError, JsonBody};
use crate::identity::Caller;
use crate::policy::{HostMatch, PathMatch, Rule};
use crate::request::Forwarded;
use crate::server::check::{self, Run};
use crate::server::AppState;

/// The most bytes of an answer's body an explanation reads (answers are small problem
/// documents).
const MAX_ANSWER: usize = 64 * 1024;

/// The headers Traefik sets from the request it forwards, which the body gives by name.
const FORWARDED: [(&str, &str); 3] =
    [("x-forwarded-method", "method"), ("x-forwarded-host", "host"), ("x-forwarded-uri", "uri")];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    method: String,
    host: String,
    uri: String,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    peer: Option<String>,
}

/// The check request Traefik would send for `body`: its headers, with `X-Forwarded-Method`,
/// `-Host` and `-Uri` (and `-Proto: https`, unless given) made from the body's fields, and the
/// peer's address (127.0.0.1 unless given). A field that cannot be a header, a header given
/// twice by its fields, or a peer that is no address is a 400 naming it; values are left out
/// of messages, since one may be a token.
pub fn forwarded_headers(body: &ExplainBody) -> Result<(HeaderMap, IpAddr), ApiError> {
    let mut headers = HeaderMap::new();
    let value = |field: &str, v: &str| {
        HeaderValue::from_str(v).map_err(|_| {
            ApiError::bad_request(
                field,
                "must be visible ASCII text a header can carry (no control characters)",
            )
        })
    };
    for (name, given) in body.headers.iter().flatten() {
        let field = format!("headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ApiError::bad_request(&field, "is not a header name"))?;
        if let Some((_, by)) = FORWARDED.iter().find(|(n, _)| header == *n) {
            return Err(ApiError::bad_request(&field, format!("give it as the body's \"{by}\"")));
        }
        headers.append(header, value(&field, given)?);
    }
    for ((name, field), given) in FORWARDED.iter().zip([&body.method, &body.host, &body.uri]) {
        headers.insert(HeaderName::from_static(name), value(field, given)?);
    }
    let proto = HeaderName::from_static("x-forwarded-proto");
    if !headers.contains_key(&proto) {
        headers.insert(proto, HeaderValue::from_static("https"));
    }
    let peer = match &body.peer {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(p) => p.parse().map_err(|_| ApiError::bad_request("peer", "must be an IPv4 or IPv6 address"))?,
    };
    Ok((headers, peer))
}

pub async fn explain(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ExplainBody>,
) -> Result<Response, ApiError> {
    let (headers, peer) = forwarded_headers(&body)?;
    let live = state.config.load_full();
    // Traefik's own check request is a GET of `/`; the X-Forwarded-* headers say the rest.
    let decided = check::decide(&state, &live, &headers, "GET", "/", peer, Run::Explain).await;
    let policy = &live.policy;
    let plan = decided.plan.map(|p| &*policy.plan(p).name);
    let rules: Vec<serde_json::Value> = match Forwarded::from_headers(&headers, "GET", "/") {
        Ok(req) => policy.rules.iter().map(|r| rule_match(r, &req)).collect(),
        Err(_) => Vec::new(),
    };
    let identity = match &decided.caller {
        None => serde_json::Value::Null,
        Some(Ok(caller)) => json!({ "caller": caller.to_string(), "key": key_of(caller) }),
        Some(Err(e)) => json!({ "error": e.to_string() }),
    };
    let (parts, body) = decided.response.into_parts();
    let answer_headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|name| {
            let values: Vec<&str> =
                parts.headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("(not text)")).collect();
            (name.as_str().to_owned(), json!(values.join(", ")))
        })
        .collect();
    let body = axum::body::to_bytes(body, MAX_ANSWER).await.unwrap_or_default();
    let body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    Ok(answer(&json!({
        "outcome": format!("{:?}", decided.outcome),
        "status": parts.status.as_u16(),
        "headers": answer_headers,
        "body": body,
        "identity": identity,
        "plan": plan,
        "plan_source": decided.source.map(|s| s.name()),
        "rules": rules,
        "limits": decided.before.iter().map(|s| limit_state(s, plan.unwrap_or(""))).collect::<Vec<_>>(),
    })))
}

/// The caller's key, for a caller identified by a token or a host (an IP is named as it is).
fn key_of(caller: &Caller) -> Option<String> {
    match caller {
        Caller::Token(key) | Caller::Host(key) => Some(crate::overrides::key_hex(*key)),
        Caller::Ip(..) => None,
    }
}

/// `{"name", "matched", "exempt", "host", "path", "method"}`: whether `rule` applies to `req`,
/// criterion by criterion, each with what the rule asks for.
fn rule_match(rule: &Rule, req: &Forwarded<'_>) -> serde_json::Value {
    let matching = rule.matching(req);
    let host = match &rule.host {
        HostMatch::Any => "*".to_owned(),
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Glob(g) => g.glob().glob().to_owned(),
    };
    let path = match &rule.path {
        PathMatch::Any => "*".to_owned(),
        PathMatch::Prefix(p) => format!("{p} (prefix)"),
        PathMatch::Glob(g) => g.pattern().to_owned(),
    };
    let method = if rule.methods.is_empty() { "*".to_owned() } else { rule.methods.join(", ") };
    let criterion = |pattern: String, matched: bool| json!({ "pattern": pattern, "matched": matched });
    json!({
        "name": &*rule.name,
        "matched": matching.all(),
        "exempt": rule.exempt,
        "host": criterion(host, matching.host),
        "path": criterion(path, matching.path),
        "method": criterion(method, matching.method),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> ExplainBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_body_becomes_the_headers_traefik_sends() {
        let b = body(serde_json::json!({
            "method": "POST", "host": "api.example.com", "uri": "/api/x?y=1",
            "headers": {"Authorization": "Bearer t", "X-Forwarded-For": "203.0.113.7"},
            "peer": "10.0.0.2",
        }));
        let (h, peer) = forwarded_headers(&b).unwrap();
        assert_eq!(h["x-forwarded-method"], "POST");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-forwarded-uri"], "/api/x?y=1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
        assert_eq!(peer, "10.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn fields_no_header_can_carry_are_named() {
        let cases = [
            (serde_json::json!({"method": "GET", "host": "h", "uri": "/\n"}), "uri"),
            (
                serde_json::json!({"method": "GET", "host": "h", "uri": "/", "headers": {"bad name": "x"}}),
                "headers.bad name",
            ),
            (
                serde_json::json!({"method": "GET", "host": "h", "uri": "/", "headers": {"X-Api-Key": "a\u{0}b"}}),
                "headers.X-Api-Key",
            ),
            (
                serde_json::json!({"method": "GET", "host": "h", "uri": "/", "headers": {"X-Forwarded-Uri": "/x"}}),
                "headers.X-Forwarded-Uri",
            ),
            (serde_json::json!({"method": "GET", "host": "h", "uri": "/", "peer": "nowhere"}), "peer"),
        ];
        for (json, field) in cases {
            let e = forwarded_headers(&body(json.clone())).err().unwrap_or_else(|| panic!("{json} accepted"));
            assert_eq!(e.field.as_deref(), Some(field), "{json}");
        }
    }
}

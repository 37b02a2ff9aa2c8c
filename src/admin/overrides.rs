//! `PUT`, `GET` and `DELETE /v1/overrides`: a token's plan and/or plan limits, set, listed
//! and removed at runtime (what they do is [`crate::overrides`]'s). Bodies name the token;
//! answers name it by fingerprint and key. Each change is logged at info.
//!
//! - `PUT {"token", "plan"?, "limits"?, "expires_at"?}`: sets (replaces) the token's override;
//!   answers it. `plan` must name a plan of the config, `limits` is a list in a plan's syntax,
//!   `expires_at` an RFC 3339 instant still to come.
//! - `GET ?cursor=KEY&limit=N`: the overrides that apply, by key, `limit` (1 to 1000, default
//!   100) at a time after `cursor`; `next_cursor` is the cursor of the next page, or null.
//! - `DELETE {"token"}` (or `{"key"}`, for an override whose token is lost): removes it, or 404.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{answer, named, token_key, ApiError, JsonBody};
use crate::config;
use crate::identity::Key;
use crate::overrides::{format_time, key_hex, parse_key, parse_time, Override, OverridesError};
use crate::server::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    token: String,
    plan: Option<String>,
    limits: Option<serde_json::Value>,
    expires_at: Option<String>,
}

/// Page size bounds of `GET /v1/overrides`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// One override as answered: who (by fingerprint and key) and the override.
fn described(key: Key, ov: &Override) -> serde_json::Value {
    let mut out = named(key);
    if let (Some(out), serde_json::Value::Object(ov)) = (out.as_object_mut(), ov.json()) {
        out.extend(ov);
    }
    out
}

fn refused(e: OverridesError) -> ApiError {
    match e {
        OverridesError::Full { .. } => ApiError::conflict(e.to_string()),
        OverridesError::Unavailable(_) => ApiError::unavailable(e.to_string()),
    }
}

pub async fn put(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let (key, max) = {
        let live = state.config.load();
        let key = token_key(&live.identity, "token", &body.token)?;
        if let Some(plan) = &body.plan {
            if live.policy.plan_named(plan).is_none() {
                return Err(ApiError::bad_request("plan", config::unknown_plan(plan, &live.policy.plans)));
            }
        }
        (key, live.admin.as_ref().map_or(1, |a| a.max_overrides))
    };
    let expires_at = match body.expires_at.as_deref().map(parse_time).transpose() {
        Err(e) => return Err(ApiError::bad_request("expires_at", e)),
        Ok(Some(at)) if at <= now => {
            let msg = format!("must be in the future (got {}, now {})", format_time(at), format_time(now));
            return Err(ApiError::bad_request("expires_at", msg));
        }
        Ok(at) => at,
    };
    let ov = Override::new(body.plan, body.limits, now, expires_at).map_err(ApiError::invalid)?;
    let ov = state.overrides.put(key, ov, max, now).await.map_err(refused)?;
    tracing::info!(
        call = "PUT /v1/overrides",
        fingerprint = %key.fingerprint(),
        plan = ov.plan.as_deref().unwrap_or("-"),
        limits = %ov.json()["limits"],
        expires_at = ov.expires_at.map(format_time).as_deref().unwrap_or("-"),
        "admin: override set"
    );
    Ok(answer(&described(key, &ov)))
}

pub async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (mut cursor, mut limit) = (None, None);
    for (name, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        let twice = || ApiError::bad_request(&*name, "given twice");
        match &*name {
            // `?cursor=` asks for the first page.
            "cursor" if value.is_empty() => {}
            "cursor" => {
                let key = parse_key(&value).ok_or_else(|| {
                    ApiError::bad_request(
                        "cursor",
                        "must be the next_cursor of a previous page (32 hex digits)",
                    )
                })?;
                if cursor.replace(key).is_some() {
                    return Err(twice());
                }
            }
            "limit" => {
                let n = value.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                    ApiError::bad_request("limit", format!("must be a whole number from 1 to {MAX_PAGE}"))
                })?;
                if limit.replace(n).is_some() {
                    return Err(twice());
                }
            }
            other => return Err(ApiError::bad_request(other, "unknown query parameter (cursor, limit)")),
        }
    }
    let (page, more) = state.overrides.list(cursor, limit.unwrap_or(DEFAULT_PAGE), state.clock.now());
    let next = page.last().filter(|_| more).map(|(k, _)| key_hex(*k));
    let overrides: Vec<_> = page.iter().map(|(k, o)| described(*k, o)).collect();
    Ok(answer(&json!({ "overrides": overrides, "next_cursor": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    token: Option<String>,
    key: Option<String>,
}

pub async fn delete(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DeleteBody>,
) -> Result<Response, ApiError> {
    let key = match (&body.token, &body.key) {
        (Some(token), None) => token_key(&state.config.load().identity, "token", token)?,
        (None, Some(hex)) => parse_key(hex).ok_or_else(|| {
            ApiError::bad_request("key", "must be the key of an override as listed (32 hex digits)")
        })?,
        _ => return Err(ApiError::bad_request("token", "give token or key, one of them")),
    };
    if !state.overrides.remove(key).await.map_err(refused)? {
        let msg = format!("no override for {} (key {})", key.fingerprint(), key_hex(key));
        return Err(ApiError::not_found(msg));
    }
    tracing::info!(call = "DELETE /v1/overrides", fingerprint = %key.fingerprint(), "admin: override removed");
    let mut out = named(key);
    out["removed"] = json!(true);
    Ok(answer(&out))
}

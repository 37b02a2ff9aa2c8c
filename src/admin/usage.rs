//! `POST /v1/usage` and `POST /v1/reset`: what a token has used of every limit that can apply
//! to it, and forgetting it. Both read the store without counting (`Store::peek`,
//! `Store::reset`); the body names the token, answers name it by fingerprint and key.
//!
//! - `POST /v1/usage {"token"}`: the token's plan and where it came from (an override,
//!   `[tokens]`, `defaults.unknown_tokens`), the override that applies, and one entry per limit
//!   that can apply: the plan's own limits (or the override's) and every rule's limits for that
//!   plan, each with `used`, `remaining`, `reset_seconds` now ([`limit_state`]).
//! - `POST /v1/reset {"token", "scope"?}`: clears the token's counters in `scope` (the plan's
//!   name for its own limits, or a rule's name) or in all of them; answers what was cleared
//!   and logs it at info.
//!
//! A token's plan here is the one a request carrying only that token gets: a plan header is a
//! property of a request, which `POST /v1/explain` takes whole.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{answer, named, token_key, ApiError, JsonBody};
use crate::identity::{Caller, Key};
use crate::limiter::{Algorithm, Nanos, SECOND};
use crate::overrides::Override;
use crate::policy::{Mode, PlanId, Policy, PolicyError, Scope, Scopes, PLAN_SCOPE};
use crate::server::check::{self, Standing};
use crate::server::AppState;
use crate::store::{Counting, Decision, StoreError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBody {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    token: String,
    scope: Option<String>,
}

/// A token, its plan, where the plan came from, and the override that applies to it.
struct Planned {
    key: Key,
    plan: PlanId,
    source: &'static str,
    applied: Option<std::sync::Arc<Override>>,
}

impl Planned {
    /// The token's plan at `now`, as a check of a request carrying only the token decides it
    /// ([`check::plan_of`]). 404 for a token the config rejects.
    fn of(state: &AppState, policy: &Policy, key: Key, now: Nanos) -> Result<Planned, ApiError> {
        match check::plan_of(state, policy, &Caller::Token(key), &HeaderMap::new(), now) {
            Ok((plan, source, applied)) => Ok(Planned { key, plan, source: source.name(), applied }),
            Err(PolicyError::UnknownToken) => Err(ApiError::not_found(format!(
                "unknown API token (fingerprint {}): not in [tokens], and defaults.unknown_tokens rejects it",
                key.fingerprint()
            ))),
        }
    }

    /// Every scope that can apply to the token, sorted by id: its plan's own limits (the
    /// override's, if it gives some) and each rule's limits for the plan. None for an
    /// unlimited plan without override limits, which no rule limits either.
    fn scopes<'p>(&'p self, policy: &'p Policy) -> Scopes<'p> {
        let own = self.applied.as_deref().and_then(|o| o.limits.as_deref());
        policy.every_scope(self.plan, own)
    }

    /// `{"fingerprint", "key", "plan", "plan_source"}`.
    fn json(&self, policy: &Policy) -> serde_json::Value {
        let mut out = named(self.key);
        out["plan"] = json!(&*policy.plan(self.plan).name);
        out["plan_source"] = json!(self.source);
        out
    }
}

/// The name answers give a scope: its rule's, or the plan's for the plan's own limits.
fn scope_name<'a>(rule: Option<&'a crate::policy::Rule>, plan: &'a str) -> &'a str {
    rule.map_or(plan, |r| &r.name)
}

/// Nanoseconds as seconds, with their fraction.
fn seconds(nanos: Nanos) -> f64 {
    nanos as f64 / SECOND as f64
}

/// One limit's state for answers (`LimitState` in docs/admin-api.yaml): `plan` is the name of
/// the plan a plan scope belongs to.
pub(super) fn limit_state(s: &Standing, plan: &str) -> serde_json::Value {
    let v = &s.verdict;
    let algorithm = match s.limit.algorithm {
        Algorithm::Fixed { .. } => "fixed",
        Algorithm::Sliding { .. } => "sliding",
        Algorithm::Gcra { .. } => "bucket",
        Algorithm::Concurrent { .. } => "concurrent",
    };
    json!({
        "name": &*s.limit.name,
        "scope": s.rule.as_deref().unwrap_or(plan),
        "kind": if s.rule.is_some() { "rule" } else { "plan" },
        "mode": if s.mode == Mode::Enforce { "enforce" } else { "dry_run" },
        "algorithm": algorithm,
        "quota": v.quota,
        "window_seconds": seconds(v.window),
        "used": v.quota.saturating_sub(v.remaining),
        "remaining": v.remaining,
        "reset_seconds": seconds(v.reset),
        "retry_after_seconds": seconds(v.retry_after),
        "allowed": v.allowed,
    })
}

fn unavailable(e: &StoreError) -> ApiError {
    ApiError::unavailable(format!("{e}: nothing was read or changed"))
}

pub async fn usage(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<UsageBody>,
) -> Result<Response, ApiError> {
    let live = state.config.load_full();
    let policy = &live.policy;
    let now = state.clock.now();
    let planned = Planned::of(&state, policy, token_key(&live.identity, "token", &body.token)?, now)?;
    let scopes = planned.scopes(policy);
    let counting = if policy.count_denied { Counting::Everything } else { Counting::AllowedOnly };
    let peek = state.store.peek(planned.key, &scopes, now, counting).await.map_err(|e| unavailable(&e))?;
    if peek.next == Decision::Unchecked {
        return Err(ApiError::unavailable(
            "the store cannot be read now (checks pass unchecked meanwhile: on_error = \"allow\")",
        ));
    }
    let plan = policy.plan(planned.plan);
    let mut out = planned.json(policy);
    out["override"] = planned.applied.as_deref().map_or(serde_json::Value::Null, Override::json);
    out["unlimited"] = json!(scopes.is_empty());
    out["limits"] = peek.now.iter().map(|j| limit_state(&Standing::of(j), &plan.name)).collect();
    Ok(answer(&out))
}

pub async fn reset(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ResetBody>,
) -> Result<Response, ApiError> {
    let live = state.config.load_full();
    let policy = &live.policy;
    let now = state.clock.now();
    let planned = Planned::of(&state, policy, token_key(&live.identity, "token", &body.token)?, now)?;
    let plan = &*policy.plan(planned.plan).name;
    let mut scopes = planned.scopes(policy);
    if let Some(wanted) = &body.scope {
        let all: Vec<&str> = scopes.iter().map(|s| scope_name(s.rule, plan)).collect();
        scopes.retain(|s| scope_name(s.rule, plan) == wanted);
        if scopes.is_empty() {
            let known =
                if all.is_empty() { "none: the plan is unlimited".to_owned() } else { all.join(", ") };
            let msg =
                format!("names no scope that applies to this token on plan {plan} (its scopes: {known})");
            return Err(ApiError::bad_request("scope", msg));
        }
    }
    let counters = state.store.reset(planned.key, &scopes, now).await.map_err(|e| unavailable(&e))?;
    let cleared: Vec<serde_json::Value> = scopes.iter().map(|s| scope_json(s, plan)).collect();
    tracing::info!(
        call = "POST /v1/reset",
        fingerprint = %planned.key.fingerprint(),
        plan,
        scopes = %scopes.iter().map(|s| scope_name(s.rule, plan)).collect::<Vec<_>>().join(","),
        counters,
        "admin: counters reset"
    );
    let mut out = planned.json(policy);
    out["cleared"] = json!(cleared);
    out["counters"] = json!(counters);
    Ok(answer(&out))
}

/// `{"scope", "kind", "limits": [names]}` of one cleared scope.
fn scope_json(s: &Scope<'_>, plan: &str) -> serde_json::Value {
    json!({
        "scope": scope_name(s.rule, plan),
        "kind": if s.id == PLAN_SCOPE { "plan" } else { "rule" },
        "limits": s.limits.iter().map(|l| &*l.name).collect::<Vec<_>>(),
    })
}

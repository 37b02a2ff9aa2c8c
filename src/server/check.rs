//! The forwardAuth handler: one check, top to bottom. The clock is read once, here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use smallvec::SmallVec;

use super::response::{self, Report};
use super::AppState;
use crate::config::Config;
use crate::request::Forwarded;
use crate::store::{Counting, Scoped};
use crate::telemetry::Outcome;

/// Answers one forwardAuth check.
pub async fn check(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, _body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(a)| a.ip());
    let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let forwarded = Forwarded::from_headers(&parts.headers, parts.method.as_str(), uri);
    let config = state.config.load();
    let response = decide(&state, &config, &parts.headers, &forwarded, peer).await;
    state.metrics.check_took(started.elapsed());
    response
}

async fn decide(
    state: &AppState,
    config: &Config,
    headers: &HeaderMap,
    req: &Forwarded<'_>,
    peer: IpAddr,
) -> Response {
    let policy = &config.policy;
    if !policy.allow.is_empty() {
        let ip = config.identity.client_ip(headers, peer);
        if policy.is_allowed_ip(ip) {
            state.metrics.decision(Outcome::allow_listed, policy, None, None);
            return response::pass(None, None);
        }
    }
    let caller = match config.identity.identify(headers, req, peer) {
        Ok(caller) => caller,
        Err(e) => {
            tracing::debug!(error = %e, "request not identified");
            state.metrics.decision(Outcome::rejected, policy, None, None);
            return response::unidentified(&e);
        }
    };
    let plan_id = match policy.plan_of(&caller, headers) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(%caller, error = %e, "token rejected");
            state.metrics.decision(Outcome::rejected, policy, None, None);
            return response::unknown_token(&caller);
        }
    };
    let plan = policy.plan(plan_id);
    let applicable = policy.applicable(plan_id, req);
    if let Some(rule) = applicable.exempt {
        state.metrics.decision(Outcome::exempt, policy, Some(plan_id), Some(rule));
        return response::pass(Some(plan), Some(&caller));
    }
    if applicable.scopes.is_empty() {
        state.metrics.decision(Outcome::unlimited, policy, Some(plan_id), None);
        return response::pass(Some(plan), Some(&caller));
    }

    let scoped: SmallVec<[Scoped<'_>; 4]> =
        applicable.scopes.iter().map(|s| Scoped { scope: s.id, limits: s.limits }).collect();
    let counting = if policy.count_denied { Counting::Everything } else { Counting::AllowedOnly };
    let now = state.clock.now();
    let decision = match state.store.check(caller.key(), &scoped, now, counting).await {
        Ok(d) => d,
        Err(e) => {
            state.metrics.decision(Outcome::unavailable, policy, Some(plan_id), None);
            tracing::debug!(%caller, error = %e, "store unavailable: failing closed");
            return response::unavailable(&e);
        }
    };
    if decision.verdicts.is_empty() {
        // The store could not check and `on_error = "allow"` lets the request through.
        state.metrics.decision(Outcome::unchecked, policy, Some(plan_id), None);
        return response::pass(Some(plan), Some(&caller));
    }
    let report = Report { plan, caller: &caller, scopes: &applicable.scopes, decision: &decision };

    if decision.allowed {
        let rule = applicable.scopes.iter().find_map(|s| s.rule);
        state.metrics.decision(Outcome::allowed, policy, Some(plan_id), rule);
        tracing::debug!(%caller, plan = %plan.name, "allowed");
        return response::allowed(&report);
    }
    let rule = report.denying_rule();
    // For the logs only: evaluated when the debug level is on.
    let rule_name = || rule.map_or("-", |r| &*policy.rule(r).name);
    if applicable.dry_run {
        state.metrics.decision(Outcome::dry_run_denied, policy, Some(plan_id), rule);
        tracing::debug!(%caller, plan = %plan.name, rule = rule_name(), limits = %report.violated_names(), "would deny (dry run)");
        return response::allowed(&report);
    }
    state.metrics.decision(Outcome::denied, policy, Some(plan_id), rule);
    tracing::debug!(%caller, plan = %plan.name, rule = rule_name(), limits = %report.violated_names(), "denied");
    response::denied(&report)
}

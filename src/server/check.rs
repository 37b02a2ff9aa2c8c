//! The forwardAuth handler: one check, top to bottom. The clock is read once, here.
//!
//! headers ([`Forwarded`]) -> identity (who calls) -> policy (the caller's plan, then the scopes
//! that apply, each with its mode) -> store (checks and counts them with the limiter's
//! arithmetic) -> [`Decision`] -> response. Each check is counted once in the decision metrics,
//! under one outcome. An admitted request whose scopes hold a concurrency limit (or any, with
//! `answers.tickets = "always"`) is checked under a fresh ticket id and answered with its ticket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::response::{self, Report};
use super::{AppState, Live};
use crate::config::{Config, Tickets};
use crate::identity::{Caller, Key};
use crate::limiter::Nanos;
use crate::policy::{self, Applicable, Mode, Plan, Rule, RuleId, Scope};
use crate::request::Forwarded;
use crate::store::{Counting, Decision};
use crate::telemetry::Outcome;
use crate::ticket::{Minter, Ticket};

/// Answers one forwardAuth check. An allowed request whose bucket let it reserve a token
/// still to come ([`Decision::wait`]) is answered once that token is due.
pub async fn check(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, _body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(a)| a.ip());
    let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let live = state.config.load();
    let (response, wait) = match Forwarded::from_headers(&parts.headers, parts.method.as_str(), uri) {
        Ok(forwarded) => decide(&state, &live, &parts.headers, &forwarded, peer).await,
        Err(e) => {
            tracing::debug!(error = %e, "forwarded request refused");
            live.decisions.count(Outcome::rejected, None, None);
            (response::bad_request(&e), 0)
        }
    };
    drop(live);
    state.metrics.check_took(started.elapsed());
    if wait > 0 {
        // The token was reserved and counted by the store, as Traefik's reservation is, so a
        // client that goes away while it waits has spent it. A tokio timer holds no lock, no
        // Redis connection and no worker thread while it runs.
        tokio::time::sleep(Duration::from_nanos(wait)).await;
    }
    response
}

async fn decide(
    state: &AppState,
    live: &Live,
    headers: &HeaderMap,
    req: &Forwarded<'_>,
    peer: IpAddr,
) -> (Response, Nanos) {
    let (config, metrics) = (&live.config, &live.decisions);
    let policy = &config.policy;
    if !policy.allow.is_empty() {
        let ip = config.identity.client_ip(headers, peer);
        if policy.is_allowed_ip(ip) {
            metrics.count(Outcome::allow_listed, None, None);
            return (response::pass(None, None), 0);
        }
    }
    let caller = match config.identity.identify(headers, req, peer) {
        Ok(caller) => caller,
        Err(e) => {
            tracing::debug!(error = %e, "request not identified");
            metrics.count(Outcome::rejected, None, None);
            return (response::unidentified(&e), 0);
        }
    };
    let now = state.clock.now();
    // The caller's override, if any, wins over the config's plan and the plan's own limits.
    let applied = state.overrides.get(caller.key(), now);
    let overridden = applied.as_deref().and_then(|o| o.plan_in(policy));
    let plan_id = match overridden.map_or_else(|| policy.plan_of(&caller, headers), Ok) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(%caller, error = %e, "token rejected");
            metrics.count(Outcome::rejected, None, None);
            return (response::unknown_token(&caller), 0);
        }
    };
    let plan = policy.plan(plan_id);
    let own = applied.as_deref().and_then(|o| o.limits.as_deref());
    let scopes = match policy.applicable_with(plan_id, own, req) {
        Applicable::Exempt(rule) => {
            metrics.count(Outcome::exempt, Some(plan_id), Some(rule.id));
            return (response::pass(Some(plan), Some(&caller)), 0);
        }
        Applicable::Unlimited => {
            metrics.count(Outcome::unlimited, Some(plan_id), None);
            return (response::pass(Some(plan), Some(&caller)), 0);
        }
        Applicable::Limited(scopes) => scopes,
    };

    let counting = if policy.count_denied { Counting::Everything } else { Counting::AllowedOnly };
    let ticket = ticket_for(config, caller.key(), plan, &scopes, now);
    let checked = match &ticket {
        Some(t) => state.store.check_ticket(caller.key(), &scopes, now, counting, t.id).await,
        None => state.store.check(caller.key(), &scopes, now, counting).await,
    };
    let decision = match checked {
        Ok(d) => d,
        Err(e) => {
            metrics.count(Outcome::unavailable, Some(plan_id), None);
            tracing::debug!(%caller, error = %e, "store unavailable: failing closed");
            return (response::unavailable(&e), 0);
        }
    };
    let (verdicts, allowed) = match &decision {
        Decision::Allowed(v) => (v, true),
        Decision::Denied(v) => (v, false),
        Decision::Unchecked => {
            metrics.count(Outcome::unchecked, Some(plan_id), None);
            return (response::pass(Some(plan), Some(&caller)), 0);
        }
    };
    // Only an admitted request holds slots, so only it gets a ticket to free them.
    let ticket = ticket.filter(|_| allowed).and_then(|t| mint(&live.minter, &t, &caller));
    if ticket.is_some() {
        state.metrics.ticket_issued();
    }
    let report = Report {
        plan,
        caller: &caller,
        verdicts,
        ratelimit_on_allowed: config.answers.ratelimit_on_allowed,
        ticket: ticket.as_deref(),
    };

    // Dry-run limits never change the answer: they are only reported.
    let dry_run = report.worst(Mode::DryRun);
    if let Some(j) = dry_run {
        tracing::debug!(%caller, plan = %plan.name, rule = rule_name(j.rule), limits = %report.violated_names(Mode::DryRun), "would deny (dry run)");
    }
    if allowed {
        match dry_run {
            Some(j) => metrics.count(Outcome::dry_run_denied, Some(plan_id), rule_id(j.rule)),
            None => {
                let rule = scopes.iter().filter(|s| s.mode == Mode::Enforce).find_map(|s| s.rule);
                metrics.count(Outcome::allowed, Some(plan_id), rule_id(rule));
                tracing::debug!(%caller, plan = %plan.name, "allowed");
            }
        }
        return (response::allowed(&report), decision.wait());
    }
    let rule = report.worst(Mode::Enforce).and_then(|j| j.rule);
    metrics.count(Outcome::denied, Some(plan_id), rule_id(rule));
    if verdicts.iter().any(|j| j.mode == Mode::Enforce && !j.verdict.allowed && j.limit.is_concurrent()) {
        state.metrics.ticket_refused();
    }
    tracing::debug!(%caller, plan = %plan.name, rule = rule_name(rule), limits = %report.violated_names(Mode::Enforce), "denied");
    (response::denied(&report), 0)
}

/// The ticket an admitted request of `caller` on `plan` gets, if any: when one of its scopes
/// (dry-run ones too) has a concurrency limit, whose slot the ticket frees, or with
/// `answers.tickets = "always"` (the request had limits), so that its backend can report its
/// cost. It expires when the longest `hold` among those limits ends, else after
/// `answers.ticket_hold`, and names every scope of the request.
fn ticket_for(config: &Config, caller: Key, plan: &Plan, scopes: &[Scope<'_>], now: Nanos) -> Option<Ticket> {
    let hold = match (policy::slot_hold(scopes), config.answers.tickets) {
        (Some(hold), _) => hold,
        (None, Tickets::Always) => {
            Nanos::try_from(config.answers.ticket_hold.as_nanos()).unwrap_or(Nanos::MAX)
        }
        (None, Tickets::Concurrent) => return None,
    };
    // What admission charged: the enforced scopes' cost (a dry-run rule's never changes it).
    let enforced = scopes.iter().filter(|s| s.mode == Mode::Enforce).map(|s| s.cost).max();
    let cost = enforced.or_else(|| scopes.iter().map(|s| s.cost).max()).unwrap_or(1);
    Some(Ticket {
        id: fastrand::u128(..),
        caller,
        expires: now.saturating_add(hold),
        cost,
        plan: plan.name.clone(),
        scopes: scopes.iter().map(|s| s.id).collect(),
    })
}

/// The ticket's text; `None` (logged) if it cannot be minted, as for a plan name over 255 bytes:
/// its slots then free themselves when their `hold` ends.
fn mint(minter: &Minter, ticket: &Ticket, caller: &Caller) -> Option<String> {
    minter
        .mint(ticket)
        .inspect_err(|e| tracing::warn!(%caller, error = %e, "admitted without a ticket; its slots free themselves at hold"))
        .ok()
}

/// The rule label of a decision metric.
fn rule_id(rule: Option<&Rule>) -> Option<RuleId> {
    rule.map(|r| r.id)
}

/// For the logs: called only when the debug level is on.
fn rule_name(rule: Option<&Rule>) -> &str {
    rule.map_or("-", |r| &r.name)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;
    use crate::limiter::{Algorithm, Limit, Window, SECOND};

    const NOW: Nanos = 1_795_460_700 * SECOND;

    fn minute() -> Limit {
        Limit::new(
            "minute",
            Algorithm::Fixed { requests: NonZeroU32::new(10).unwrap(), window: Window::Minute },
        )
    }

    fn concurrent(hold: Nanos) -> Limit {
        Limit::new("concurrent", Algorithm::Concurrent { max: NonZeroU32::new(2).unwrap(), hold })
    }

    #[test]
    fn only_a_request_meeting_a_concurrency_limit_gets_a_ticket_unless_always() {
        let mut config = Config::embedded();
        let plan = Plan::new("pro", false, vec![minute()]);
        let windows = [minute()];
        let scopes = [Scope::enforced(0, &windows)];
        assert_eq!(ticket_for(&config, Key(7), &plan, &scopes, NOW), None);
        config.answers.tickets = Tickets::Always;
        config.answers.ticket_hold = Duration::from_secs(90);
        let t = ticket_for(&config, Key(7), &plan, &scopes, NOW).expect("always");
        assert_eq!(
            (t.caller, t.expires, t.cost, &*t.plan, &t.scopes[..]),
            (Key(7), NOW + 90 * SECOND, 1, "pro", &[0][..])
        );
    }

    #[test]
    fn a_ticket_lasts_the_longest_hold_names_every_scope_and_the_enforced_cost() {
        let config = Config::embedded();
        let plan = Plan::new("pro", false, vec![concurrent(120 * SECOND)]);
        let (long, short, windows) = ([concurrent(120 * SECOND)], [concurrent(30 * SECOND)], [minute()]);
        let scopes = [
            Scope::enforced(0, &long).costing(5),
            Scope { mode: Mode::DryRun, ..Scope::enforced(3, &windows).costing(9) },
            Scope::enforced(8, &short).costing(5),
        ];
        let t = ticket_for(&config, Key(7), &plan, &scopes, NOW).expect("a concurrency limit");
        assert_eq!((t.expires, t.cost, &t.scopes[..]), (NOW + 120 * SECOND, 5, &[0, 3, 8][..]));
        let u = ticket_for(&config, Key(7), &plan, &scopes, NOW).unwrap();
        assert_ne!(t.id, u.id, "each request draws its own id");
    }
}

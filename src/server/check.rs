//! The forwardAuth handler: one check, top to bottom. The clock is read once, here.
//!
//! headers ([`Forwarded`]) -> identity (who calls) -> policy (the caller's plan, then the scopes
//! that apply, each with its mode) -> store (checks and counts them with the limiter's
//! arithmetic) -> [`Decision`] -> response. Each check is counted once in the decision metrics,
//! under one outcome. An admitted request whose scopes hold a concurrency limit (or any, with
//! `answers.tickets = "always"`) is checked under a fresh ticket id and answered with its ticket.
//!
//! [`decide`] is the one decision path: a check runs it counting ([`Run::Check`]), and the admin
//! API's `POST /v1/explain` runs it peeking at the store instead ([`Run::Explain`]), so an
//! explanation can only say what a check would answer. It returns the answer with what it was
//! made from ([`Decided`]); the handler counts it in the decision metrics.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::response::{self, Report};
use super::{AppState, Live};
use crate::config::{Config, Tickets};
use crate::identity::{Caller, IdentityError, Key};
use crate::limiter::{Limit, Nanos, Verdict};
use crate::overrides::Override;
use crate::policy::{
    self, Applicable, Mode, Plan, PlanId, PlanSource, Policy, PolicyError, Rule, RuleId, Scope,
};
use crate::request::Forwarded;
use crate::store::{Counting, Decision, Judged};
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
    let decided = decide(&state, &live, &parts.headers, parts.method.as_str(), uri, peer, Run::Check).await;
    live.decisions.count(decided.outcome, decided.plan, decided.rule);
    drop(live);
    state.metrics.check_took(started.elapsed());
    if decided.wait > 0 {
        // The token was reserved and counted by the store, as Traefik's reservation is, so a
        // client that goes away while it waits has spent it. A tokio timer holds no lock, no
        // Redis connection and no worker thread while it runs.
        tokio::time::sleep(Duration::from_nanos(decided.wait)).await;
    }
    decided.response
}

/// How a request is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// A forwardAuth check: the store counts the request (an admitted one holds its slots under
    /// a fresh ticket, which it is answered with), and the decision is logged.
    Check,
    /// An explanation (`POST /v1/explain`): the store is peeked at, nothing is counted, no
    /// ticket is minted ([`UNMINTED`] stands in its header) and nothing is logged.
    Explain,
}

/// The `X-Quotagate-Ticket` of an explained answer where a check would mint a ticket.
pub const UNMINTED: &str = "(a ticket is minted when a check admits the request)";

/// A decision: the answer, how the decision metrics count it, and what it was made from.
#[derive(Debug)]
pub struct Decided {
    pub response: Response,
    /// Nanoseconds an allowed request waits for the token it reserved before it is answered.
    pub wait: Nanos,
    pub outcome: Outcome,
    pub plan: Option<PlanId>,
    /// The rule the metrics name.
    pub rule: Option<RuleId>,
    /// Who called, or why that could not be told; `None` if the request was answered before
    /// (a malformed forwarded request, an allow-listed client).
    pub caller: Option<Result<Caller, IdentityError>>,
    /// Where the plan came from, once it is known.
    pub source: Option<PlanSource>,
    /// With [`Run::Explain`]: each limit the request meets, as it stands before it.
    pub before: Vec<Standing>,
}

/// One limit as it stands before a request (see [`Decided::before`]).
#[derive(Clone, Debug)]
pub struct Standing {
    pub limit: Limit,
    /// The rule whose scope it is in; `None` for the plan's own limits.
    pub rule: Option<Arc<str>>,
    pub mode: Mode,
    pub verdict: Verdict,
}

impl Decided {
    /// An answer given before the store is asked.
    fn early(outcome: Outcome, response: Response) -> Decided {
        Decided {
            response,
            wait: 0,
            outcome,
            plan: None,
            rule: None,
            caller: None,
            source: None,
            before: Vec::new(),
        }
    }
}

/// The plan of `caller` at `now`, where it came from, and the override that applies to it, if
/// any: an applying override's plan wins over the config's (plan header, `[tokens]`, defaults),
/// and its limits replace the plan's own.
pub fn plan_of(
    state: &AppState,
    policy: &Policy,
    caller: &Caller,
    headers: &HeaderMap,
    now: Nanos,
) -> Result<(PlanId, PlanSource, Option<Arc<Override>>), PolicyError> {
    let applied = state.overrides.get(caller.key(), now);
    match applied.as_deref().and_then(|o| o.plan_in(policy)) {
        Some(plan) => Ok((plan, PlanSource::Override, applied)),
        None => policy.plan_and_source(caller, headers).map(|(plan, source)| (plan, source, applied)),
    }
}

/// Decides the request a check with `headers` (its own `method` and `uri` apply where no
/// `X-Forwarded-*` header says otherwise) from `peer` asks about, as `run` says: the one path
/// both checks and explanations take. The clock is read once, here.
pub async fn decide(
    state: &AppState,
    live: &Live,
    headers: &HeaderMap,
    method: &str,
    uri: &str,
    peer: IpAddr,
    run: Run,
) -> Decided {
    // Only a check counts (metrics beyond the decision's own) and logs.
    let checking = run == Run::Check;
    let req = match Forwarded::from_headers(headers, method, uri) {
        Ok(req) => req,
        Err(e) => {
            if checking {
                tracing::debug!(error = %e, "forwarded request refused");
            }
            return Decided::early(Outcome::rejected, response::bad_request(&e));
        }
    };
    let config = &live.config;
    let policy = &config.policy;
    if !policy.allow.is_empty() {
        let ip = config.identity.client_ip(headers, peer);
        if policy.is_allowed_ip(ip) {
            return Decided::early(Outcome::allow_listed, response::pass(None, None));
        }
    }
    let caller = match config.identity.identify(headers, &req, peer) {
        Ok(caller) => caller,
        Err(e) => {
            if checking {
                tracing::debug!(error = %e, "request not identified");
            }
            let response = response::unidentified(&e);
            return Decided { caller: Some(Err(e)), ..Decided::early(Outcome::rejected, response) };
        }
    };
    let now = state.clock.now();
    let (plan_id, source, applied) = match plan_of(state, policy, &caller, headers, now) {
        Ok(p) => p,
        Err(e) => {
            if checking {
                tracing::debug!(%caller, error = %e, "token rejected");
            }
            let response = response::unknown_token(&caller);
            return Decided { caller: Some(Ok(caller)), ..Decided::early(Outcome::rejected, response) };
        }
    };
    let plan = policy.plan(plan_id);
    let decided = |outcome, rule: Option<&Rule>, response| Decided {
        plan: Some(plan_id),
        rule: rule.map(|r| r.id),
        caller: Some(Ok(caller)),
        source: Some(source),
        ..Decided::early(outcome, response)
    };
    let own = applied.as_deref().and_then(|o| o.limits.as_deref());
    let scopes = match policy.applicable_with(plan_id, own, &req) {
        Applicable::Exempt(rule) => {
            return decided(Outcome::exempt, Some(rule), response::pass(Some(plan), Some(&caller)));
        }
        Applicable::Unlimited => {
            return decided(Outcome::unlimited, None, response::pass(Some(plan), Some(&caller)))
        }
        Applicable::Limited(scopes) => scopes,
    };

    let counting = if policy.count_denied { Counting::Everything } else { Counting::AllowedOnly };
    let ticket = ticket_for(config, caller.key(), plan, &scopes, now);
    let (checked, before) = match run {
        Run::Check => {
            let checked = match &ticket {
                Some(t) => state.store.check_ticket(caller.key(), &scopes, now, counting, t.id).await,
                None => state.store.check(caller.key(), &scopes, now, counting).await,
            };
            (checked, Vec::new())
        }
        Run::Explain => match state.store.peek(caller.key(), &scopes, now, counting).await {
            Ok(peek) => (Ok(peek.next), peek.now.iter().map(Standing::of).collect()),
            Err(e) => (Err(e), Vec::new()),
        },
    };
    let decision = match checked {
        Ok(d) => d,
        Err(e) => {
            if checking {
                tracing::debug!(%caller, error = %e, "store unavailable: failing closed");
            }
            return decided(Outcome::unavailable, None, response::unavailable(&e));
        }
    };
    let decided = |outcome, rule, response| Decided { before, ..decided(outcome, rule, response) };
    let (verdicts, allowed) = match &decision {
        Decision::Allowed(v) => (v, true),
        Decision::Denied(v) => (v, false),
        Decision::Unchecked => {
            return decided(Outcome::unchecked, None, response::pass(Some(plan), Some(&caller)));
        }
    };
    // Only an admitted request holds slots, so only it gets a ticket to free them.
    let ticket = ticket.filter(|_| allowed);
    let ticket = match run {
        Run::Check => ticket.and_then(|t| mint(&live.minter, &t, &caller)),
        Run::Explain => ticket.map(|_| UNMINTED.to_owned()),
    };
    if ticket.is_some() && checking {
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
    if let Some(j) = dry_run.filter(|_| checking) {
        tracing::debug!(%caller, plan = %plan.name, rule = rule_name(j.rule), limits = %report.violated_names(Mode::DryRun), "would deny (dry run)");
    }
    if allowed {
        let response = response::allowed(&report);
        let decided = match dry_run {
            Some(j) => decided(Outcome::dry_run_denied, j.rule, response),
            None => {
                if checking {
                    tracing::debug!(%caller, plan = %plan.name, "allowed");
                }
                let rule = scopes.iter().filter(|s| s.mode == Mode::Enforce).find_map(|s| s.rule);
                decided(Outcome::allowed, rule, response)
            }
        };
        return Decided { wait: decision.wait(), ..decided };
    }
    let rule = report.worst(Mode::Enforce).and_then(|j| j.rule);
    let refused =
        verdicts.iter().any(|j| j.mode == Mode::Enforce && !j.verdict.allowed && j.limit.is_concurrent());
    if checking {
        if refused {
            state.metrics.ticket_refused();
        }
        tracing::debug!(%caller, plan = %plan.name, rule = rule_name(rule), limits = %report.violated_names(Mode::Enforce), "denied");
    }
    decided(Outcome::denied, rule, response::denied(&report))
}

impl Standing {
    /// What `j` says of its limit.
    pub fn of(j: &Judged<'_>) -> Standing {
        Standing {
            limit: j.limit.clone(),
            rule: j.rule.map(|r| r.name.clone()),
            mode: j.mode,
            verdict: j.verdict,
        }
    }
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

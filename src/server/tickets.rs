//! `POST /v1/tickets/close`, served on `server.tickets_listen` only: a backend hands back the
//! ticket of a request it has finished ([`crate::ticket`]), with the request's real cost if it
//! knows it. The request's concurrency slots are freed and the cost is charged, once: a retried
//! close finds the ticket closed and does nothing.
//!
//! The listener is for backends, not clients; with `server.tickets_token_file` every call must
//! also carry `Authorization: Bearer <token>`, checked in constant time. Body: `{"ticket":
//! "qt1...", "cost": 12}`, `cost` optional, an integer from 0 to [`MAX_COST`]. Nothing a caller
//! sends makes it fail: what it sends wrong is a 400, 401, 408 or 413, and `response` writes
//! every answer.
//!
//! Closing rebuilds the request's scopes from the ticket with the config in force now: its plan
//! by name (the plan's own scope with the caller's override limits, if one applies), its rules
//! by scope id; a plan or rule removed since is skipped (its slots free themselves when their
//! `hold` ends).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::response;
use super::AppState;
use crate::policy::Scopes;
use crate::store::{Closed, StoreError};
use crate::telemetry::CloseResult;
use crate::ticket::TicketError;

/// The largest cost one close may report.
pub const MAX_COST: u64 = 1_000_000_000;

/// The largest body read: a close request with the longest ticket is under 2 KB.
pub const MAX_BODY: usize = 8 * 1024;

/// A close request's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    ticket: String,
    #[serde(default)]
    cost: Option<u64>,
}

/// Why a close did nothing. Messages never quote a token or a ticket.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// `server.tickets_token_file` is set and the request does not carry its token.
    #[error(
        "missing or wrong bearer token (send Authorization: Bearer <server.tickets_token_file's token>)"
    )]
    Unauthorized,
    /// Over [`MAX_BODY`], or cut short.
    #[error("the body is larger than {MAX_BODY} bytes, or was cut short")]
    TooLarge,
    #[error("the body did not arrive within {0:?}")]
    Slow(std::time::Duration),
    /// Not JSON, or not `{"ticket": "...", "cost": N}`.
    #[error("the body is not a close request ({0}); expected {{\"ticket\": \"qt1...\", \"cost\": 12}}")]
    Body(serde_json::Error),
    #[error("cost must be an integer from 0 to {MAX_COST} (got {0})")]
    Cost(u64),
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// Closed already, expired, or never issued by this store.
    #[error("unknown ticket: closed already, expired, or not issued by this store")]
    Unknown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CloseError {
    /// The `result` label of `quotagate_tickets_closed_total`, if this close request counts: a
    /// refused credential or an unavailable store says nothing about the ticket.
    fn result(&self) -> Option<CloseResult> {
        match self {
            CloseError::TooLarge
            | CloseError::Slow(_)
            | CloseError::Body(_)
            | CloseError::Cost(_)
            | CloseError::Ticket(_) => Some(CloseResult::invalid),
            CloseError::Unknown => Some(CloseResult::unknown),
            CloseError::Unauthorized | CloseError::Store(_) => None,
        }
    }
}

/// Answers one `POST /v1/tickets/close`.
pub async fn close(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match closing(&state, &parts.headers, body).await {
        Ok((released, charged, cost)) => {
            state.metrics.ticket_closed(CloseResult::closed, cost);
            response::ticket_closed(released, &charged)
        }
        Err(e) => {
            if let Some(result) = e.result() {
                state.metrics.ticket_closed(result, 0);
            }
            tracing::debug!(error = %e, "ticket not closed");
            response::close_refused(&e)
        }
    }
}

/// What a close did: the slots released, and each charged limit's name, what it was charged
/// and what it has left; and the cost reported.
type Done = (u32, Vec<response::Charged>, u32);

async fn closing(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Done, CloseError> {
    let live = state.config.load();
    if let Some(token) = &live.server.tickets_token {
        if !bearer_is(headers, token) {
            return Err(CloseError::Unauthorized);
        }
    }
    // hyper's header read timeout bounds the head only: the body gets as long again.
    let patience = live.server.connections.header_read_timeout;
    let bytes = tokio::time::timeout(patience, axum::body::to_bytes(body, MAX_BODY))
        .await
        .map_err(|_| CloseError::Slow(patience))?
        .map_err(|_| CloseError::TooLarge)?;
    let request: CloseRequest = serde_json::from_slice(&bytes).map_err(CloseError::Body)?;
    let cost = match request.cost.unwrap_or(0) {
        c if c <= MAX_COST => u32::try_from(c).expect("MAX_COST fits a u32"),
        c => return Err(CloseError::Cost(c)),
    };
    let ticket = live.minter.read(&request.ticket)?;
    let now = state.clock.now();
    if ticket.expires <= now {
        return Err(CloseError::Unknown);
    }
    let policy = &live.policy;
    // The caller's override, if one applies now, gives the plan's own scope its limits, as it
    // does for checks.
    let applied = state.overrides.get(ticket.caller, now);
    let own = applied.as_deref().and_then(|o| o.limits.as_deref());
    let scopes = policy
        .plan_named(&ticket.plan)
        .map_or_else(Scopes::new, |p| policy.scopes_of_with(p, own, &ticket.scopes));
    let closed = state.store.close(ticket.caller, ticket.id, ticket.expires, &scopes, cost, now).await?;
    match closed {
        Closed::Closed { released, charged } => {
            tracing::debug!(
                caller = %ticket.caller.fingerprint(),
                plan = %ticket.plan,
                admitted_at_cost = ticket.cost,
                released,
                cost,
                "ticket closed"
            );
            let charged = charged.iter().map(|j| response::Charged::of(j, cost)).collect();
            Ok((released, charged, cost))
        }
        Closed::Unknown => Err(CloseError::Unknown),
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>` exactly once, the token hashing to
/// `hash`. `blake3::Hash` compares in constant time, and hashing first makes the comparison
/// independent of where the bytes differ.
fn bearer_is(headers: &HeaderMap, hash: &blake3::Hash) -> bool {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return false };
    let value = value.as_bytes();
    let Some((scheme, token)) = value.iter().position(|&b| b == b' ').map(|i| value.split_at(i)) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer") && blake3::hash(token.trim_ascii()) == *hash
}

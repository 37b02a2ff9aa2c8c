//! Counters: where the state of every (scope, caller) lives, and the atomic check-and-count of
//! all limits that apply to one request. Stores know scopes and limits, not plans; a scope's
//! rule is carried into its verdicts untouched.
//!
//! A request's enforced scopes are one all-or-nothing set: it is counted in each only if every
//! enforced limit allows it. Each dry-run scope is checked and counted on its own, as if it
//! were the only scope, so it never changes the answer nor what the enforced scopes count.
//!
//! Backends: [`Memory`] (sharded maps, one process) and [`Redis`] (shared by replicas, with the memory
//! store as its fallback). The closed set is an `enum`, so the hot path has no dynamic dispatch.

mod memory;
mod redis;
pub mod snapshot;

use std::time::Duration;

use smallvec::SmallVec;

pub use memory::Memory;
pub use redis::{Health, Redis};

use crate::identity::Key;
use crate::limiter::{Limit, Nanos, Verdict};
use crate::policy::Rule;
pub use crate::policy::{Mode, Scope};

/// The verdict of one limit, with the limit it is about and the scope's mode and rule.
#[derive(Clone, Copy, Debug)]
pub struct Judged<'p> {
    pub limit: &'p Limit,
    /// `None` for a plan's own limits.
    pub rule: Option<&'p Rule>,
    pub mode: Mode,
    pub verdict: Verdict,
}

/// Equal verdicts on equal limits, of the same mode and the very same rule.
impl PartialEq for Judged<'_> {
    fn eq(&self, other: &Self) -> bool {
        let same_rule = match (self.rule, other.rule) {
            (Some(a), Some(b)) => std::ptr::eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        self.limit == other.limit && same_rule && self.mode == other.mode && self.verdict == other.verdict
    }
}

impl Eq for Judged<'_> {}

/// Every limit's verdict for one request, scope by scope in the order given to the store:
/// inline for up to four limits.
pub type Verdicts<'p> = SmallVec<[Judged<'p>; 4]>;

/// A store's answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'p> {
    /// Every enforced limit allowed the request (dry-run limits may not have).
    Allowed(Verdicts<'p>),
    /// An enforced limit denied it.
    Denied(Verdicts<'p>),
    /// The store could not check and `on_error = "allow"` lets the request through.
    Unchecked,
}

impl<'p> Decision<'p> {
    /// Allowed if every enforced verdict allowed the request, else denied.
    fn of(verdicts: Verdicts<'p>) -> Decision<'p> {
        let enforced = verdicts.iter().filter(|j| j.mode == Mode::Enforce);
        if enforced.clone().all(|j| j.verdict.allowed) {
            Decision::Allowed(verdicts)
        } else {
            Decision::Denied(verdicts)
        }
    }

    /// Whether the request was checked and every enforced limit allowed it.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }

    /// Nanoseconds an allowed request waits before it may pass: the longest wait of its
    /// enforced verdicts (each reserved its token when the request was counted). Zero when
    /// denied or unchecked; dry-run limits never make a request wait.
    pub fn wait(&self) -> Nanos {
        match self {
            Decision::Allowed(v) => {
                v.iter().filter(|j| j.mode == Mode::Enforce).map(|j| j.verdict.wait).max().unwrap_or(0)
            }
            Decision::Denied(_) | Decision::Unchecked => 0,
        }
    }

    /// The verdicts, enforced and dry-run; none if unchecked.
    pub fn verdicts(&self) -> &[Judged<'p>] {
        match self {
            Decision::Allowed(v) | Decision::Denied(v) => v,
            Decision::Unchecked => &[],
        }
    }
}

/// What a request arriving now would meet, nothing counted and no slot taken
/// ([`Store::peek`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peek<'p> {
    /// Every limit as it stands, scope by scope: `allowed` says whether it would admit the next
    /// request, and the rest what is left before it (as a verdict on a request not counted).
    /// Empty when `next` is [`Decision::Unchecked`].
    pub now: Verdicts<'p>,
    /// The decision [`Store::check`] would give that request, its verdicts as it would leave
    /// them.
    pub next: Decision<'p>,
}

/// The id a request's concurrency slots are held under: the id of its ticket.
pub type TicketId = u128;

/// What closing a ticket did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed<'p> {
    /// The ticket was open and is closed now: `released` concurrency slots were freed (slots
    /// whose hold had ended are not counted), and the reported cost was charged to the limits
    /// of `charged`, in scope order. Each verdict says whether the cost fitted in what was left
    /// (`allowed`), and the rest as the next request of cost 1 would find it.
    Closed { released: u32, charged: Vec<Judged<'p>> },
    /// Closed already (or never issued by this store, or expired): nothing was done.
    Unknown,
}

/// What to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counting {
    /// Count a request in a set of scopes only when every limit of the set allows it.
    AllowedOnly,
    /// Count every request, denied ones too.
    Everything,
}

/// Why a store gave no decision. Every failure to reach or understand Redis is decided by
/// `on_error`; this is its `"deny"`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Redis cannot answer (or answered something the script never returns) and
    /// `on_error = "deny"`.
    #[error("the rate-limit store is unavailable")]
    Unavailable { retry_after: Duration },
}

/// The configured store.
#[derive(Debug)]
pub enum Store {
    Memory(Memory),
    Redis(std::sync::Arc<Redis>),
}

impl Store {
    /// Checks every limit of `scopes` (sorted by id, distinct) for `caller` at `now` and counts
    /// the request: in the enforced scopes if every enforced limit allows it, in each dry-run
    /// scope if that scope's limits allow it (in all of them with [`Counting::Everything`]).
    /// Atomically, so concurrent requests never get more than the limits allow between them.
    ///
    /// A request admitted by a concurrency limit holds a slot under a random ticket id; use
    /// [`Store::check_ticket`] to choose the id (and so be able to close it).
    pub async fn check<'p>(
        &self,
        caller: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
        counting: Counting,
    ) -> Result<Decision<'p>, StoreError> {
        self.check_ticket(caller, scopes, now, counting, fastrand::u128(..)).await
    }

    /// [`Store::check`], holding the slots of the concurrency limits that admit the request
    /// under `ticket` until [`Store::close`] or their `hold` ends.
    pub async fn check_ticket<'p>(
        &self,
        caller: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
        counting: Counting,
        ticket: TicketId,
    ) -> Result<Decision<'p>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.check_ticket(caller, scopes, now, counting, ticket)),
            Store::Redis(r) => r.check(caller, scopes, now, counting, ticket).await,
        }
    }

    /// Closes `ticket` of `caller`, valid until `expires`: frees its slots in the concurrency
    /// limits of `scopes` (dry-run ones too) and charges `cost` more to their limits that count
    /// cost, without an admission check (which may take them over their quota; a bucket's debt
    /// stays capped). Once: a second close of the same ticket, or one at or after `expires`, is
    /// [`Closed::Unknown`] and does nothing. A cost of 0 charges nothing. `Err` only from Redis
    /// unreachable with `on_error` other than `"local"`: nothing was closed.
    pub async fn close<'p>(
        &self,
        caller: Key,
        ticket: TicketId,
        expires: Nanos,
        scopes: &[Scope<'p>],
        cost: u32,
        now: Nanos,
    ) -> Result<Closed<'p>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.close(caller, ticket, expires, scopes, cost, now)),
            Store::Redis(r) => r.close(caller, ticket, expires, scopes, cost, now).await,
        }
    }

    /// Requests holding a concurrency slot at `now`, where the store can tell: exactly for
    /// the memory store; `None` for Redis, where it would take reading every caller's slots.
    pub fn in_flight(&self, now: Nanos) -> Option<u64> {
        match self {
            Store::Memory(m) => Some(m.in_flight(now)),
            Store::Redis(_) => None,
        }
    }

    /// Concurrency slots freed by their hold (their tickets never closed in time) since start,
    /// as the store found them.
    pub fn slots_ended(&self) -> u64 {
        match self {
            Store::Memory(m) => m.slots_ended(),
            Store::Redis(r) => r.slots_ended(),
        }
    }

    /// What a request of `caller` arriving at `now` would meet in `scopes` (sorted by id,
    /// distinct), checked as [`Store::check`] with `counting` would, but with nothing counted
    /// and no slot taken. Where a check would be decided by `on_error`, so is this.
    pub async fn peek<'p>(
        &self,
        caller: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
        counting: Counting,
    ) -> Result<Peek<'p>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.peek(caller, scopes, now, counting)),
            Store::Redis(r) => r.peek(caller, scopes, now, counting).await,
        }
    }

    /// Forgets what `caller` has counted in `scopes`, as if it had never been seen there, its
    /// concurrency slots too (their tickets then close nothing). Returns how many limit
    /// counters (and slots, in memory) held something. A Redis store clears its local fallback
    /// too, and fails (whatever `on_error` says) if Redis cannot be reached.
    pub async fn reset(&self, caller: Key, scopes: &[Scope<'_>], now: Nanos) -> Result<u64, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.reset(caller, scopes, now)),
            Store::Redis(r) => r.reset(caller, scopes, now).await,
        }
    }

    /// Entries currently held in memory (approximate; for Redis, its local fallback).
    pub fn live_keys(&self) -> u64 {
        match self {
            Store::Memory(m) => m.live_keys(),
            Store::Redis(_) => 0,
        }
    }

    /// Whether the store can take checks now.
    pub fn is_ready(&self) -> bool {
        match self {
            Store::Memory(_) => true,
            Store::Redis(r) => r.is_ready(),
        }
    }

    /// A short description of the store's state for `/readyz`.
    pub fn describe(&self) -> String {
        match self {
            Store::Memory(_) => "memory".to_owned(),
            Store::Redis(r) => {
                format!("redis {}: {:?} (on error: {:?})", r.describe(), r.health(), r.on_error())
                    .to_lowercase()
            }
        }
    }
}

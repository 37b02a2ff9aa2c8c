//! Counters: where the state of every (scope, caller) lives, and the atomic check-and-count of
//! all limits that apply to one request. Stores know scopes and limits, not plans or rules.
//!
//! The memory store is the only backend so far; the closed set of backends is an `enum` so the
//! hot path has no dynamic dispatch.

mod memory;

use smallvec::SmallVec;

pub use memory::Memory;

use crate::identity::Key;
use crate::limiter::{Limit, Nanos, Verdict};

/// The limits of one scope, as handed to a store.
#[derive(Clone, Copy, Debug)]
pub struct Scoped<'a> {
    pub scope: u32,
    pub limits: &'a [Limit],
}

/// The verdict of one limit, located by its position in the request's scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judged {
    pub scope: u8,
    pub limit: u8,
    pub verdict: Verdict,
}

/// A store's answer for one request: allowed only if every limit allowed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub verdicts: SmallVec<[Judged; 4]>,
}

/// What to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counting {
    /// Count a request only when every limit allows it.
    AllowedOnly,
    /// Count every request, denied ones too.
    Everything,
}

/// The configured store.
#[derive(Debug)]
pub enum Store {
    Memory(Memory),
}

impl Store {
    /// Checks every limit of `scopes` for `caller` at `now` and, if all allow it (or `counting`
    /// says so), counts the request in each: atomically, so concurrent requests never get more
    /// than the limits allow between them.
    pub fn check(&self, caller: Key, scopes: &[Scoped<'_>], now: Nanos, counting: Counting) -> Decision {
        match self {
            Store::Memory(m) => m.check(caller, scopes, now, counting),
        }
    }

    /// Entries currently held (approximate).
    pub fn live_keys(&self) -> u64 {
        match self {
            Store::Memory(m) => m.live_keys(),
        }
    }

    /// Whether the store can take checks now.
    pub fn is_ready(&self) -> bool {
        match self {
            Store::Memory(_) => true,
        }
    }
}

//! Counters: where the state of every (scope, caller) lives, and the atomic check-and-count of
//! all limits that apply to one request. Stores know scopes and limits, not plans or rules.
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

/// Why a store gave no decision.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Redis cannot answer and `on_error = "deny"`.
    #[error("the rate-limit store is unavailable")]
    Unavailable { retry_after: Duration },
    /// Redis answered something the script never returns.
    #[error("the rate-limit store gave an unexpected reply")]
    Protocol,
}

impl StoreError {
    /// Whether trying again later may succeed (it may, for both today).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. } | StoreError::Protocol)
    }
}

/// The configured store.
#[derive(Debug)]
pub enum Store {
    Memory(Memory),
    Redis(std::sync::Arc<Redis>),
}

impl Store {
    /// Checks every limit of `scopes` for `caller` at `now` and, if all allow it (or `counting`
    /// says so), counts the request in each: atomically, so concurrent requests never get more
    /// than the limits allow between them.
    pub async fn check(
        &self,
        caller: Key,
        scopes: &[Scoped<'_>],
        now: Nanos,
        counting: Counting,
    ) -> Result<Decision, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.check(caller, scopes, now, counting)),
            Store::Redis(r) => r.check(caller, scopes, now, counting).await,
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

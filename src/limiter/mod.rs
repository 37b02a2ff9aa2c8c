//! Rate-limit algorithms as pure arithmetic: a [`Limit`] decides from a [`State`] and an
//! explicit `now`, and nothing here reads the clock, allocates on the hot path or does I/O.
//!
//! Three algorithms, each in its own module:
//! - [`fixed`]: `requests` per calendar-aligned window (the seed article's model);
//! - [`sliding`]: the same quota, with the previous window's count weighted by how much of it
//!   still overlaps the last window-length of time (Cloudflare's "sliding window counter");
//! - [`gcra`]: a token bucket with Traefik's `average`/`period`/`burst` semantics, as GCRA.
//!
//! Where the counters live (and how several limits are checked atomically) is `store`'s business.
//! Checking is two-phase so a store can check every limit of a request before counting any:
//! [`Limit::roll`] brings a state to `now`, [`Limit::check`] answers without changing it and
//! [`Limit::record`] counts one request.

pub mod calendar;
mod fixed;
mod gcra;
mod sliding;

use std::num::NonZeroU32;
use std::sync::Arc;

pub use calendar::Window;

/// Nanoseconds since the Unix epoch, UTC. `u64` lasts until the year 2554.
pub type Nanos = u64;

/// One second in [`Nanos`].
pub const SECOND: Nanos = 1_000_000_000;

/// Which algorithm a limit uses, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// At most `requests` per calendar window.
    Fixed { requests: NonZeroU32, window: Window },
    /// At most `requests` per window, the previous window weighted by its overlap.
    Sliding { requests: NonZeroU32, window: Window },
    /// A bucket of `burst` requests refilled by one every `emission` nanoseconds
    /// (`period / average` in Traefik's terms).
    Gcra { emission: Nanos, burst: NonZeroU32 },
}

/// A named limit, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Stable name shown in `RateLimit-Policy` and problem bodies, e.g. `"minute"`.
    pub name: Arc<str>,
    /// Identifies this limit's counter across reloads: the algorithm and its window (for GCRA,
    /// its emission interval), not its quota, so raising a quota keeps what was counted.
    pub id: u32,
    pub algorithm: Algorithm,
}

/// Counter state of one limit for one caller. 16 bytes; what the fields mean depends on the
/// algorithm (see each module). `State::default()` is a caller never seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// fixed, sliding: end of the current window; gcra: the theoretical arrival time (TAT).
    pub at: Nanos,
    /// fixed, sliding: requests counted in the current window.
    pub count: u32,
    /// sliding: requests counted in the previous window.
    pub previous: u32,
}

/// What a limit says about one request arriving at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The quota: requests per window, or the bucket size.
    pub quota: u32,
    /// Requests still available after this one (if allowed) or now (if denied).
    pub remaining: u32,
    /// Nanoseconds until the quota is whole again (end of the window; bucket refilled).
    pub reset: Nanos,
    /// If denied: nanoseconds until a request would be allowed. Zero if allowed.
    pub retry_after: Nanos,
    /// Length of the window this verdict speaks of, in nanoseconds (for `RateLimit-Policy`).
    pub window: Nanos,
}

impl Limit {
    /// A limit whose id is derived from its algorithm and window.
    pub fn new(name: impl Into<Arc<str>>, algorithm: Algorithm) -> Self {
        let id = match algorithm {
            Algorithm::Fixed { window, .. } => stable_id(b'f', window.id()),
            Algorithm::Sliding { window, .. } => stable_id(b's', window.id()),
            Algorithm::Gcra { emission, .. } => stable_id(b'g', emission),
        };
        Limit { name: name.into(), id, algorithm }
    }

    /// The quota of this limit: requests per window, or the bucket size.
    pub fn quota(&self) -> u32 {
        match self.algorithm {
            Algorithm::Fixed { requests, .. } | Algorithm::Sliding { requests, .. } => requests.get(),
            Algorithm::Gcra { burst, .. } => burst.get(),
        }
    }

    /// Brings `state` to `now`: starts a new window if the old one ended. Idempotent; it never
    /// changes what has been counted inside the current window.
    pub fn roll(&self, state: &mut State, now: Nanos) {
        match self.algorithm {
            Algorithm::Fixed { window, .. } => fixed::roll(window, state, now),
            Algorithm::Sliding { window, .. } => sliding::roll(window, state, now),
            Algorithm::Gcra { .. } => {}
        }
    }

    /// Whether one more request at `now` fits, for a state already [`roll`](Self::roll)ed.
    pub fn check(&self, state: &State, now: Nanos) -> Verdict {
        match self.algorithm {
            Algorithm::Fixed { requests, window } => fixed::check(requests, window, state, now),
            Algorithm::Sliding { requests, window } => sliding::check(requests, window, state, now),
            Algorithm::Gcra { emission, burst } => gcra::check(emission, burst, state, now),
        }
    }

    /// Counts one request at `now` into a state already rolled.
    pub fn record(&self, state: &mut State, now: Nanos) {
        match self.algorithm {
            Algorithm::Fixed { .. } | Algorithm::Sliding { .. } => {
                state.count = state.count.saturating_add(1)
            }
            Algorithm::Gcra { emission, .. } => gcra::record(emission, state, now),
        }
    }

    /// The verdict of an allowed request that was then not counted (another limit denied it):
    /// one more remains, and the reset is as before.
    pub fn uncounted(&self, mut v: Verdict) -> Verdict {
        if v.allowed {
            v.remaining = v.remaining.saturating_add(1).min(v.quota);
            if let Algorithm::Gcra { emission, .. } = self.algorithm {
                v.reset = v.reset.saturating_sub(emission);
            }
        }
        v
    }

    /// When this state stops mattering: after that instant a fresh state behaves the same.
    /// Stores use it as the entry's expiry.
    pub fn expires(&self, state: &State) -> Nanos {
        match self.algorithm {
            Algorithm::Fixed { .. } | Algorithm::Gcra { .. } => state.at,
            // The previous window's count weighs on the whole next window.
            Algorithm::Sliding { window, .. } => window.bounds(state.at).1,
        }
    }
}

fn stable_id(kind: u8, window: u64) -> u32 {
    // FNV-1a: stable across builds and platforms, which snapshots and Redis keys rely on.
    let mut h: u32 = 0x811c_9dc5;
    for b in std::iter::once(kind).chain(window.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs one request through roll, check and record, counting it only if allowed.
    pub(crate) fn hit(limit: &Limit, state: &mut State, now: Nanos) -> Verdict {
        limit.roll(state, now);
        let v = limit.check(state, now);
        if v.allowed {
            limit.record(state, now);
        }
        v
    }
}

//! Rate-limit algorithms as pure arithmetic: a [`Limit`] decides from a [`State`] and an
//! explicit `now`, and nothing here reads the clock, allocates on the hot path or does I/O.
//!
//! Three algorithms, each in its own module:
//! - [`fixed`]: `requests` per calendar-aligned window (the seed article's model);
//! - [`sliding`]: the same quota, with the previous window's count weighted by how much of it
//!   still overlaps the last window-length of time (Cloudflare's "sliding window counter");
//! - [`gcra`]: a token bucket with Traefik's `average`/`period`/`burst` semantics, as GCRA;
//! - [`concurrent`]: requests in flight, read off the slots a store keeps ([`slot_end`]).
//!
//! Where the counters live (and how several limits are checked atomically) is `store`'s business.
//! Checking is two-phase so a store can check every limit of a request before counting any:
//! [`Limit::roll`] brings a state to `now`, [`Limit::admits`] answers without changing it and
//! [`Limit::record`] counts the request. Only then does [`Limit::verdict`] say what is left, when
//! it resets and how long to wait, from the state the request left behind: a wait computed before
//! a denied request is counted would send the client back too early.
//!
//! **Weights.** A request takes its weight from each limit ([`Limit::weight`]: its cost, or 1
//! for a limit that counts requests): a window admits it while `used + weight <= quota` and
//! counts `weight`; a bucket admits it when its `weight`-th token is due within `tau` (plus
//! `max_delay`) and moves its TAT on by `weight` emission intervals. Every wait a verdict gives
//! is the wait of a request of the same weight.
//!
//! **Exact, and within [`MAX_SPAN`].** Everything is integer nanoseconds. Windows, buckets
//! (`burst` emission intervals) and a bucket's debt (what counted denied requests push its
//! theoretical arrival time past `now`) are at most [`MAX_SPAN`]: config refuses longer ones, and
//! [`Limit::record`] caps the debt. That bound lets the Redis script (whose numbers are doubles,
//! exact below 2^53) compute the very same integers as this module.

pub mod calendar;
mod concurrent;
mod fixed;
mod gcra;
mod sliding;

use std::num::NonZeroU32;
use std::sync::Arc;

pub use calendar::Window;
pub use concurrent::slot_end;

/// Nanoseconds since the Unix epoch, UTC. `u64` lasts until the year 2554.
pub type Nanos = u64;

/// One second in [`Nanos`].
pub const SECOND: Nanos = 1_000_000_000;

/// The longest `max_delay` of a bucket: a waiting request holds its client's connection, and
/// `MAX_SPAN + MAX_DELAY` stays below 2^53 for the Redis script.
pub const MAX_DELAY: Nanos = 3600 * SECOND;

/// The longest window, bucket span or bucket debt: 100 days. Below 2^53 nanoseconds (104 days),
/// so the Redis script's doubles hold every wait, reset and difference of instants exactly.
pub const MAX_SPAN: Nanos = 100 * 86_400 * SECOND;

/// Which algorithm a limit uses, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// At most `requests` per calendar window.
    Fixed { requests: NonZeroU32, window: Window },
    /// At most `requests` per window, the previous window weighted by its overlap.
    Sliding { requests: NonZeroU32, window: Window },
    /// A bucket of `burst` requests refilled by one every `emission` nanoseconds
    /// (`period / average` in Traefik's terms). A request that finds the bucket empty is still
    /// admitted if its token comes within `max_delay` nanoseconds: it reserves that token now
    /// and waits for it ([`Verdict::wait`]), as Traefik's reservation does.
    Gcra { emission: Nanos, burst: NonZeroU32, max_delay: Nanos },
    /// At most `max` requests in flight at once (`{ concurrent, hold }`). Not a counter: each
    /// admitted request holds a slot (a ticket) until its backend closes it or `hold`
    /// nanoseconds pass ([`slot_end`]), whichever comes first. The store keeps the slots and
    /// reads a [`State`] off them ([`State::holding`]) before each check; one request holds one
    /// slot whatever its cost.
    Concurrent { max: NonZeroU32, hold: Nanos },
}

/// What a limit counts per admitted request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Counts {
    /// The request's cost (a rule's `cost`, 1 by default), and any cost its backend reports
    /// when it closes its ticket: `counts = "cost"`, the default.
    #[default]
    Cost,
    /// One per request, whatever it costs: `counts = "requests"`.
    Requests,
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
    /// What one admitted request adds: its cost, or one.
    pub counts: Counts,
}

/// Counter state of one limit for one caller. 16 bytes; what the fields mean depends on the
/// algorithm (see each module). `State::default()` is a caller never seen (holding no slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// fixed, sliding: end of the current window; gcra: the theoretical arrival time (TAT);
    /// concurrent: when the oldest live slot frees itself (0 with none).
    pub at: Nanos,
    /// fixed, sliding: requests (units of cost) counted in the current window; concurrent:
    /// live slots.
    pub count: u32,
    /// sliding: requests counted in the previous window.
    pub previous: u32,
}

/// What a limit says about one request arriving at `now`. Every number but `allowed` is read
/// from the state the request left behind (counted or not), so they hold for the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether this limit admitted the request (before anything was counted).
    pub allowed: bool,
    /// The quota: requests (units of cost) per window, or the bucket size.
    pub quota: u32,
    /// Units of the quota still there at `now`: requests of weight 1 that would be admitted.
    pub remaining: u32,
    /// Nanoseconds until the quota is whole again (end of the window; bucket refilled).
    pub reset: Nanos,
    /// Nanoseconds until this limit admits a request of the verdict's weight again without
    /// making it wait: the least `w` such that such a request at `now + w` is admitted with no
    /// [`wait`](Self::wait), and one at `now + w - 1` is not. Zero while `remaining` is at
    /// least the weight; it can be more than zero for an allowed request that took the last
    /// ones. A bucket with a `max_delay` admits (with a wait) from `retry_after - max_delay`
    /// on; Traefik's `Retry-After` is this number too. A weight above the whole quota (config
    /// refuses such costs) is never admitted: its wait is that of a request taking the whole
    /// quota.
    pub retry_after: Nanos,
    /// Nanoseconds an admitted request waits for its reserved token before it may pass: zero
    /// but for a bucket with a `max_delay` whose next token is still to come. It holds for the
    /// request only if it was counted (always so in an allowed decision's enforced verdicts).
    pub wait: Nanos,
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
            // One concurrency limit per scope: its slots outlive changes of `max` and `hold`.
            Algorithm::Concurrent { .. } => stable_id(b'c', 0),
        };
        Limit { name: name.into(), id, algorithm, counts: Counts::Cost }
    }

    /// This limit, counting `counts` per admitted request.
    pub fn counting(mut self, counts: Counts) -> Self {
        self.counts = counts;
        self
    }

    /// What one request of cost `cost` adds to this limit: `cost` (at least 1), or 1 for a
    /// limit that counts requests. Concurrency limits hold one slot whatever the cost.
    pub fn weight(&self, cost: u32) -> u32 {
        match (self.algorithm, self.counts) {
            (Algorithm::Concurrent { .. }, _) | (_, Counts::Requests) => 1,
            (_, Counts::Cost) => cost.max(1),
        }
    }

    /// Whether a cost reported when a ticket is closed is charged to this limit: a window or
    /// bucket counting cost.
    pub fn counts_cost(&self) -> bool {
        self.counts == Counts::Cost && !self.is_concurrent()
    }

    /// Whether this is a concurrency limit (its slots live in the store, not in a [`State`]).
    pub fn is_concurrent(&self) -> bool {
        matches!(self.algorithm, Algorithm::Concurrent { .. })
    }

    /// The quota of this limit: requests per window, or the bucket size.
    pub fn quota(&self) -> u32 {
        match self.algorithm {
            Algorithm::Fixed { requests, .. } | Algorithm::Sliding { requests, .. } => requests.get(),
            Algorithm::Gcra { burst, .. } => burst.get(),
            Algorithm::Concurrent { max, .. } => max.get(),
        }
    }

    /// Brings `state` to `now`: starts a new window if the old one ended. Idempotent; it never
    /// changes what has been counted inside the current window.
    pub fn roll(&self, state: &mut State, now: Nanos) {
        match self.algorithm {
            Algorithm::Fixed { window, .. } => fixed::roll(window, state, now),
            Algorithm::Sliding { window, .. } => sliding::roll(window, state, now),
            Algorithm::Gcra { .. } | Algorithm::Concurrent { .. } => {}
        }
    }

    /// Whether a request of `weight` ([`Limit::weight`], at least 1) fits at `now`, for a
    /// state already [`roll`](Self::roll)ed: the window has `weight` left, or the bucket's
    /// `weight`-th token is due (within `max_delay`).
    pub fn admits(&self, state: &State, now: Nanos, weight: u32) -> bool {
        match self.algorithm {
            Algorithm::Fixed { requests, .. } => fixed::admits(requests, state, weight),
            Algorithm::Sliding { requests, window } => {
                sliding::used(window, state, now) + u64::from(weight) <= u64::from(requests.get())
            }
            Algorithm::Gcra { emission, burst, max_delay } => {
                gcra::admits(emission, burst, max_delay, state, now, weight)
            }
            Algorithm::Concurrent { max, .. } => concurrent::admits(max, state),
        }
    }

    /// Counts a request of `weight` at `now` into a state already rolled (admitted or not:
    /// whether to count a denied one is the caller's choice). Counts saturate at `u32::MAX`;
    /// a bucket's debt stops at [`MAX_SPAN`]. Nothing for a concurrency limit: the store
    /// inserts an admitted request's slot.
    pub fn record(&self, state: &mut State, now: Nanos, weight: u32) {
        match self.algorithm {
            Algorithm::Fixed { .. } | Algorithm::Sliding { .. } => {
                state.count = state.count.saturating_add(weight)
            }
            Algorithm::Gcra { emission, .. } => gcra::record(emission, state, now, weight),
            Algorithm::Concurrent { .. } => {}
        }
    }

    /// The verdict on a request of `weight` at `now` that this limit `allowed` (as
    /// [`admits`](Self::admits) said before anything was counted), read from `state` as the
    /// request left it: recorded or not, so the wait it gives is the wait the next request of
    /// that weight really has.
    pub fn verdict(&self, state: &State, now: Nanos, allowed: bool, weight: u32) -> Verdict {
        let (remaining, reset, retry_after, window) = match self.algorithm {
            Algorithm::Fixed { requests, window } => fixed::after(requests, window, state, now, weight),
            Algorithm::Sliding { requests, window } => sliding::after(requests, window, state, now, weight),
            Algorithm::Gcra { emission, burst, .. } => gcra::after(emission, burst, state, now, weight),
            Algorithm::Concurrent { max, hold } => concurrent::after(max, hold, state, now),
        };
        let wait = match self.algorithm {
            Algorithm::Gcra { emission, burst, max_delay } if allowed && max_delay > 0 => {
                gcra::wait(emission, burst, state, now)
            }
            _ => 0,
        };
        Verdict { allowed, quota: self.quota(), remaining, reset, retry_after, wait, window }
    }

    /// Nanoseconds from the verdict's `now` until this limit's quota is available again, the
    /// `t` of its `RateLimit` item: with too little left for a request of the verdict's
    /// weight, the wait for it (`retry_after`); else, for a window, its end; for a bucket, the
    /// next token (zero when full), not the whole bucket, as a bucket refills one token at a
    /// time.
    pub fn available_in(&self, v: &Verdict) -> Nanos {
        if v.retry_after > 0 {
            return v.retry_after;
        }
        match self.algorithm {
            Algorithm::Fixed { .. } | Algorithm::Sliding { .. } => v.reset,
            Algorithm::Gcra { emission, burst, .. } => gcra::next_token(emission, burst, v),
            // The oldest slot's hold ends at `reset`.
            Algorithm::Concurrent { .. } => v.reset,
        }
    }

    /// The longest stretch of time this limit speaks of: its window (the longest month for
    /// calendar months) or its bucket's span, `burst` emission intervals. Config refuses limits
    /// longer than [`MAX_SPAN`].
    pub fn span(&self) -> u128 {
        match self.algorithm {
            Algorithm::Fixed { window, .. } | Algorithm::Sliding { window, .. } => {
                u128::from(window.alignment().map_or(31 * 86_400 * SECOND, |(len, _)| len))
            }
            Algorithm::Gcra { emission, burst, .. } => u128::from(emission.max(1)) * u128::from(burst.get()),
            Algorithm::Concurrent { hold, .. } => u128::from(hold),
        }
    }

    /// How long this limit lets an admitted request wait for its token: a bucket's
    /// `max_delay`, zero for a window.
    pub fn max_delay(&self) -> Nanos {
        match self.algorithm {
            Algorithm::Gcra { max_delay, .. } => max_delay,
            Algorithm::Fixed { .. } | Algorithm::Sliding { .. } | Algorithm::Concurrent { .. } => 0,
        }
    }

    /// When this state stops mattering: after that instant a fresh state behaves the same.
    /// Stores use it as the entry's expiry. A concurrency limit's state is read off its slots
    /// each time, so it never matters: the store keeps the slots until the last one ends.
    pub fn expires(&self, state: &State) -> Nanos {
        match self.algorithm {
            Algorithm::Concurrent { .. } => 0,
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

    /// Runs one request of weight 1 through admits, record and verdict, counting it only if
    /// allowed.
    pub(crate) fn hit(limit: &Limit, state: &mut State, now: Nanos) -> Verdict {
        hit_weighing(limit, state, now, 1)
    }

    /// [`hit`] for a request of `weight`.
    pub(crate) fn hit_weighing(limit: &Limit, state: &mut State, now: Nanos, weight: u32) -> Verdict {
        limit.roll(state, now);
        let allowed = limit.admits(state, now, weight);
        if allowed {
            limit.record(state, now, weight);
        }
        limit.verdict(state, now, allowed, weight)
    }

    /// Like [`hit`], but counts the request even if denied (`count_denied`).
    pub(crate) fn hit_counting_denied(limit: &Limit, state: &mut State, now: Nanos) -> Verdict {
        limit.roll(state, now);
        let allowed = limit.admits(state, now, 1);
        limit.record(state, now, 1);
        limit.verdict(state, now, allowed, 1)
    }

    /// Whether a request of weight 1 at `t` would be admitted, leaving `state` as it is.
    pub(crate) fn admits_at(limit: &Limit, state: &State, t: Nanos) -> bool {
        let mut probe = *state;
        limit.roll(&mut probe, t);
        limit.admits(&probe, t, 1)
    }
}

//! The in-memory store: a bounded moka cache from (caller, scope) to an entry holding the state
//! of each limit of that scope. A hit is a cache lookup and a short critical section inside the
//! entry; it never re-inserts.
//!
//! Each entry has a `parking_lot::Mutex` rather than one atomic per counter: a request must pass
//! every limit before any is counted (plan minute + plan day + rule minute, say), and checking
//! several counters all-or-nothing with atomics either over-counts during races or needs
//! rollbacks that deny requests spuriously. The lock is per caller and scope, held for a few
//! arithmetic operations and never across `.await`, so it is uncontended except when one caller
//! sends many requests at once, which is exactly when exactness matters. Entries of one request
//! are locked in ascending scope order, so two requests can never wait on each other.
//!
//! Eviction is LRU, not moka's default TinyLFU: TinyLFU may refuse to admit a new caller while
//! the cache is full, and a caller whose entry is never kept would never be limited. Expiry is
//! per entry, at the end of its last window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::policy::EvictionPolicy;
use moka::Expiry;
use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;

use super::{Counting, Decision, Judged, Scoped};
use crate::identity::Key;
use crate::limiter::{Limit, Nanos, State};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EntryKey {
    // Two u64 halves rather than a u128 keep the key 8-aligned: 24 bytes instead of 32.
    caller: [u64; 2],
    scope: u32,
}

/// Limit states of one entry, each tagged with its limit's id; inline for up to two limits.
pub(crate) type States = SmallVec<[(u32, State); 2]>;

/// The states of one (caller, scope).
#[derive(Debug)]
struct Entry {
    states: Mutex<States>,
    /// Nanoseconds this entry still matters, as of its last update; read by moka on each access.
    /// Measured from the last update rather than the access, so it errs on keeping too long.
    ttl: AtomicU64,
}

struct ByEntry;

impl Expiry<EntryKey, Arc<Entry>> for ByEntry {
    fn expire_after_create(&self, _: &EntryKey, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.ttl())
    }

    fn expire_after_read(
        &self,
        _: &EntryKey,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(entry.ttl())
    }
}

impl Entry {
    /// A new entry for `limits` at `now`. Its lifetime must be right before its first update:
    /// moka reads it when the entry is inserted, and an entry that expired too soon would let a
    /// caller who paces its requests start afresh each time.
    fn fresh(limits: &[Limit], now: Nanos) -> Entry {
        let horizon = limits.iter().map(|l| l.horizon(now)).max().unwrap_or(0);
        Entry { states: Mutex::default(), ttl: AtomicU64::new(horizon.max(1)) }
    }

    fn ttl(&self) -> Duration {
        Duration::from_nanos(self.ttl.load(Ordering::Relaxed))
    }
}

/// The in-memory store.
pub struct Memory {
    cache: moka::sync::Cache<EntryKey, Arc<Entry>>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("entries", &self.cache.entry_count()).finish()
    }
}

impl Memory {
    /// A store holding at most `max_keys` (caller, scope) entries.
    pub fn new(max_keys: u64) -> Memory {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_keys)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(ByEntry)
            .build();
        Memory { cache }
    }

    pub fn live_keys(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    pub fn check(&self, caller: Key, scopes: &[Scoped<'_>], now: Nanos, counting: Counting) -> Decision {
        let halves = [(caller.0 >> 64) as u64, caller.0 as u64];
        let entries: SmallVec<[Arc<Entry>; 4]> = scopes
            .iter()
            .map(|s| {
                self.cache.get_with(EntryKey { caller: halves, scope: s.scope }, || {
                    Entry::fresh(s.limits, now).into()
                })
            })
            .collect();
        // Lock in the order of `scopes`, which callers sort by scope id (see module docs).
        debug_assert!(scopes.windows(2).all(|w| w[0].scope < w[1].scope), "scopes sorted and distinct");
        let mut guards: SmallVec<[MutexGuard<'_, States>; 4]> =
            entries.iter().map(|e| e.states.lock()).collect();

        let mut decision = Decision { allowed: true, verdicts: SmallVec::new() };
        for (si, (scope, states)) in scopes.iter().zip(guards.iter_mut()).enumerate() {
            prune(states, scope.limits);
            for (li, limit) in scope.limits.iter().enumerate() {
                let state = &mut states[li].1;
                limit.roll(state, now);
                let verdict = limit.check(state, now);
                decision.allowed &= verdict.allowed;
                decision.verdicts.push(Judged { scope: si as u8, limit: li as u8, verdict });
            }
        }
        if decision.allowed || counting == Counting::Everything {
            for (scope, states) in scopes.iter().zip(guards.iter_mut()) {
                for (limit, (_, state)) in scope.limits.iter().zip(states.iter_mut()) {
                    limit.record(state, now);
                }
            }
        } else {
            for j in &mut decision.verdicts {
                let limit = &scopes[usize::from(j.scope)].limits[usize::from(j.limit)];
                j.verdict = limit.uncounted(j.verdict);
            }
        }
        for ((scope, states), entry) in scopes.iter().zip(guards.iter()).zip(&entries) {
            let expires = scope
                .limits
                .iter()
                .zip(states.iter())
                .map(|(limit, (_, state))| limit.expires(state))
                .max()
                .unwrap_or(now);
            entry.ttl.store(expires.saturating_sub(now).max(1), Ordering::Relaxed);
        }
        decision
    }
}

/// One entry as snapshots see it: a copy of its states taken under its lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Saved {
    pub caller: [u64; 2],
    pub scope: u32,
    /// Nanoseconds the entry still matters, as of its last update.
    pub ttl: Nanos,
    pub states: States,
}

impl Memory {
    /// The most entries this store holds.
    pub(crate) fn capacity(&self) -> u64 {
        self.cache.policy().max_capacity().expect("built with max_capacity in `new`")
    }

    /// A copy of every live entry that has been counted in, one at a time: each entry is
    /// consistent, the whole is not a point in time. Locks one entry at a time, so it never
    /// waits on a check that holds several (see the module docs on lock order).
    pub(crate) fn entries(&self) -> impl Iterator<Item = Saved> + '_ {
        self.cache.iter().filter_map(|(key, entry)| {
            let states = entry.states.lock().clone();
            // An entry created by a check that has not finished yet holds nothing to keep.
            if states.is_empty() {
                return None;
            }
            let ttl = Nanos::try_from(entry.ttl().as_nanos()).unwrap_or(Nanos::MAX);
            Some(Saved { caller: key.caller, scope: key.scope, ttl, states })
        })
    }

    /// Puts `saved` back, unless an entry for its caller and scope exists already (whose counts
    /// are newer). Returns whether it was inserted.
    pub(crate) fn restore(&self, saved: Saved) -> bool {
        let key = EntryKey { caller: saved.caller, scope: saved.scope };
        let entry = Entry { states: Mutex::new(saved.states), ttl: AtomicU64::new(saved.ttl.max(1)) };
        self.cache.entry(key).or_insert_with(|| Arc::new(entry)).is_fresh()
    }
}

/// Makes `states[i]` the state of `limits[i]`: keeps the states of limits still configured
/// (matched by id, so a reload keeps them) and starts new ones fresh.
fn prune(states: &mut States, limits: &[Limit]) {
    let in_order = states.len() == limits.len() && states.iter().zip(limits).all(|((id, _), l)| *id == l.id);
    if !in_order {
        let old = std::mem::take(states);
        for limit in limits {
            let kept = old.iter().find(|(id, _)| *id == limit.id).map_or_else(State::default, |(_, s)| *s);
            states.push((limit.id, kept));
        }
    }
}

#[cfg(test)]
mod lifetime_tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::limiter::{Algorithm, Window, SECOND};

    /// 2026-11-23 12:00:00 UTC.
    const NOON: Nanos = 1_795_435_200 * SECOND;

    #[test]
    fn a_new_entry_is_inserted_with_the_lifetime_of_its_longest_window() {
        let limits = [
            Limit::new(
                "minute",
                Algorithm::Fixed { requests: NonZeroU32::new(10).unwrap(), window: Window::Minute },
            ),
            Limit::new(
                "day",
                Algorithm::Fixed { requests: NonZeroU32::new(1000).unwrap(), window: Window::Day },
            ),
        ];
        let entry = Arc::new(Entry::fresh(&limits, NOON));
        let key = EntryKey { caller: [0, 1], scope: 0 };
        // What moka is told when it inserts the entry, before any update: the rest of the day.
        let told = ByEntry.expire_after_create(&key, &entry, Instant::now());
        assert_eq!(told, Some(Duration::from_secs(12 * 3600)));
    }

    #[test]
    fn horizons_cover_the_next_sliding_window_and_a_full_bucket() {
        let sliding = Limit::new(
            "s",
            Algorithm::Sliding { requests: NonZeroU32::new(5).unwrap(), window: Window::Day },
        );
        assert_eq!(sliding.horizon(NOON), 36 * 3600 * SECOND);
        let bucket =
            Limit::new("b", Algorithm::Gcra { emission: SECOND, burst: NonZeroU32::new(50).unwrap() });
        assert_eq!(bucket.horizon(NOON), 50 * SECOND);
    }
}

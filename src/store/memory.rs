//! The in-memory store: (caller, scope) → the state of each limit of that scope, kept inline in
//! a fixed number of shards, each an `IndexMap` behind a `parking_lot::Mutex`.
//!
//! **One lock per check.** The shard is chosen by the caller alone, so every entry a request
//! touches lives in one shard: a check takes that lock once, checks every limit of every scope
//! and counts them all-or-nothing (plan minute + plan day + rule minute, say), and two checks
//! never wait on each other in a cycle. Dry-run scopes are checked under the same lock, each
//! counted on its own. Checking several counters all-or-nothing with atomics
//! would either over-count during races or need rollbacks that deny requests spuriously. The
//! lock is held for a few arithmetic operations and never across `.await`; with 64 shards it is
//! uncontended except when one caller sends many requests at once, which is exactly when
//! exactness matters.
//!
//! **Bounded.** The shards split `max_keys` between them exactly. A new entry in a full shard
//! first takes the place of an expired one, else of the least recently used of 8 entries drawn
//! at random (Redis's approximated LRU): recently active callers keep their counts through a
//! flood of new ones, and a new caller is always admitted (a cache that may refuse to admit one,
//! as TinyLFU can, would leave that caller unlimited). Each insertion also looks at the next two
//! entries of its shard and drops them if they have expired, so expired entries are reclaimed
//! as callers arrive, with no background task and no pause.
//!
//! **Concurrency slots** live beside the entries, in the same shard and under the same lock: per
//! (caller, scope) whose limits include a concurrency limit, each ticket holding a slot and when
//! its hold ends. A check prunes the slots of each scope it reads (nothing else needs to run for
//! them to free themselves), then admits, counts and inserts the request's slot all-or-nothing
//! with the other limits. Each slot takes room in the shard as an entry does, so `max_keys`
//! bounds entries and slots together; an entry keeps its scope's slots until the last one
//! ends, and they go with it when it is evicted. Slots are not written to snapshots: a restart
//! frees them all, as their backends' tickets can no longer be closed in a store that forgot
//! them anyway.
//!
//! **Why not moka** (the stack's first choice, still used for the Redis store's local tier of
//! denials): it keeps per entry an `Arc`, access-order and write-order deque nodes, a timer-wheel
//! node and atomics, which measured 467 bytes of RSS per live key against a target of 200, and
//! its housekeeping showed p99 stalls of hundreds of milliseconds with a million keys. Here an
//! entry is 104 bytes inline plus the index (see BENCHMARKS.md for what it measures).

#[path = "memory_admin.rs"]
pub(super) mod admin;

use indexmap::IndexMap;
use parking_lot::Mutex;
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

use super::{Closed, Counting, Decision, Judged, Mode, Scope, TicketId, Verdicts};
use crate::identity::Key;
use crate::limiter::{slot_end, Algorithm, Limit, Nanos, State};

/// Shards for a large store: a power of two, enough that two requests on different cores
/// rarely meet on one lock.
const MAX_SHARDS: u64 = 64;
/// A store for fewer keys per shard than this gets fewer shards, so a small `max_keys` is not
/// split into slivers that evict while others have room.
const MIN_SHARD_KEYS: u64 = 1024;
/// Entries drawn when a full shard must evict one.
const SAMPLES: usize = 8;
/// Entries looked at for expiry on each insertion.
const SWEEP: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EntryKey {
    caller: [u64; 2],
    scope: u32,
}

/// Limit states of one entry, each tagged with its limit's id; inline for up to two limits.
pub(crate) type States = SmallVec<[(u32, State); 2]>;

/// The concurrency slots of one (caller, scope): each ticket holding one, and when its hold
/// ends.
type Slots = Vec<(TicketId, Nanos)>;

/// The concurrency slots of one shard, by the key of the entry they belong to.
#[derive(Debug, Default)]
struct Held {
    sets: std::collections::HashMap<EntryKey, Slots, FxBuildHasher>,
    /// Slots in `sets`: they take room in the shard as entries do.
    count: usize,
    /// Slots dropped since the start because their hold had ended.
    ended: u64,
}

impl Held {
    /// Drops the slots of `key` whose hold has ended by `now`; returns the state of the rest.
    fn prune(&mut self, key: &EntryKey, now: Nanos) -> State {
        let Some(slots) = self.sets.get_mut(key) else { return State::default() };
        let before = slots.len();
        slots.retain(|&(_, end)| end > now);
        let gone = before - slots.len();
        self.count -= gone;
        self.ended += gone as u64;
        State::holding(slots.iter().map(|&(_, end)| end))
    }

    /// `ticket` holds a slot of `key` until `end` (already holding one: until `end` now, as
    /// Redis's `ZADD` has it); returns the state of the slots.
    fn insert(&mut self, key: EntryKey, ticket: TicketId, end: Nanos) -> State {
        let slots = self.sets.entry(key).or_default();
        match slots.iter_mut().find(|(t, _)| *t == ticket) {
            Some(slot) => slot.1 = end,
            None => {
                slots.push((ticket, end));
                self.count += 1;
            }
        }
        State::holding(slots.iter().map(|&(_, end)| end))
    }

    /// Frees `ticket`'s slot of `key`; whether it held one whose hold had not ended.
    fn release(&mut self, key: &EntryKey, ticket: TicketId, now: Nanos) -> bool {
        self.prune(key, now);
        let Some(slots) = self.sets.get_mut(key) else { return false };
        let Some(i) = slots.iter().position(|(t, _)| *t == ticket) else { return false };
        slots.swap_remove(i);
        self.count -= 1;
        true
    }

    /// When the last slot of `key` ends (0 with none).
    fn last_end(&self, key: &EntryKey) -> Nanos {
        self.sets.get(key).and_then(|slots| slots.iter().map(|&(_, end)| end).max()).unwrap_or(0)
    }

    /// Drops every slot of `key`, whose entry is gone, counting those whose hold had ended.
    fn forget(&mut self, key: &EntryKey, now: Nanos) {
        if self.sets.is_empty() {
            return;
        }
        if let Some(slots) = self.sets.remove(key) {
            self.count -= slots.len();
            self.ended += slots.iter().filter(|&&(_, end)| end <= now).count() as u64;
        }
    }

    /// Slots whose hold has not ended by `now`.
    fn live(&self, now: Nanos) -> u64 {
        self.sets.values().flatten().filter(|&&(_, end)| end > now).count() as u64
    }
}

/// Tickets closed while still valid, each until its validity ends, so that closing one again
/// does nothing. At most the shard's capacity of them; when full, an expired one makes room,
/// else the one expiring soonest of [`SAMPLES`] drawn (forgetting one would let a retried close
/// of it count again, so those about to be refused anyway for their age go first).
#[derive(Debug, Default)]
struct ClosedTickets {
    until: IndexMap<([u64; 2], TicketId), Nanos, FxBuildHasher>,
    /// Where the next look for expired ones starts.
    cursor: usize,
}

impl ClosedTickets {
    /// Marks `ticket` of `caller`, valid until `expires`, closed; false if it was already.
    fn mark(
        &mut self,
        caller: [u64; 2],
        ticket: TicketId,
        expires: Nanos,
        now: Nanos,
        capacity: usize,
        rng: &mut fastrand::Rng,
    ) -> bool {
        let key = (caller, ticket);
        if self.until.get(&key).is_some_and(|&until| until > now) {
            return false;
        }
        for _ in 0..SWEEP {
            if self.cursor >= self.until.len() {
                self.cursor = 0;
            }
            match self.until.get_index(self.cursor) {
                Some((_, &until)) if until <= now => drop(self.until.swap_remove_index(self.cursor)),
                Some(_) => self.cursor += 1,
                None => break,
            }
        }
        while self.until.len() >= capacity.max(1) && !self.until.contains_key(&key) {
            let len = self.until.len();
            let soonest = (0..SAMPLES.min(len)).map(|_| rng.usize(..len)).min_by_key(|&i| self.until[i]);
            self.until.swap_remove_index(soonest.expect("a full map is not empty"));
        }
        self.until.insert(key, expires);
        true
    }
}

/// The states of one (caller, scope).
#[derive(Debug)]
struct Entry {
    /// After this instant every state has run its course and a fresh entry behaves the same.
    expires: Nanos,
    /// The shard's [`Shard::clock`] when a check last touched this entry, for eviction: a
    /// count rather than a time, so recency is exact even between checks at the same instant.
    used: u64,
    states: States,
}

#[derive(Debug)]
struct Shard {
    map: IndexMap<EntryKey, Entry, FxBuildHasher>,
    held: Held,
    closed: ClosedTickets,
    /// Entries and slots this shard holds at most (and closed tickets, apart).
    capacity: usize,
    /// Draws eviction candidates.
    rng: fastrand::Rng,
    /// Where the next look for expired entries starts.
    cursor: usize,
    /// Checks of this shard so far.
    clock: u64,
}

impl Shard {
    /// Whether `needed` more entries or slots would not fit.
    fn is_short_of(&self, needed: usize) -> bool {
        self.map.len() + self.held.count + needed > self.capacity
    }

    /// Makes room for `needed` new entries or slots, never evicting one of `keep`'s. Returns
    /// whether anything was removed (which moves other entries' indices).
    fn make_room(&mut self, needed: usize, keep: [u64; 2], now: Nanos) -> bool {
        let mut removed = self.sweep(now);
        while self.is_short_of(needed) {
            let Some(victim) = self.victim(keep, now) else { break };
            self.remove(victim, now);
            removed = true;
        }
        removed
    }

    /// The index of the entry of each of `keys` (all of caller `keep`), made fresh where
    /// missing, with room for `slots` new slots besides. Every entry is found or made before
    /// any is used, as inserting may evict, which moves indices.
    fn entries(
        &mut self,
        keys: &[EntryKey],
        keep: [u64; 2],
        slots: usize,
        now: Nanos,
        tick: u64,
    ) -> SmallVec<[usize; 4]> {
        let mut indices: SmallVec<[Option<usize>; 4]> =
            keys.iter().map(|k| self.map.get_index_of(k)).collect();
        let missing = indices.iter().filter(|i| i.is_none()).count();
        if missing > 0 || (slots > 0 && self.is_short_of(slots)) {
            if self.make_room(missing + slots, keep, now) {
                for (index, key) in indices.iter_mut().zip(keys) {
                    *index = self.map.get_index_of(key);
                }
            }
            for (index, key) in indices.iter_mut().zip(keys) {
                if index.is_none() {
                    let fresh = Entry { expires: now, used: tick, states: States::new() };
                    *index = Some(self.map.insert_full(*key, fresh).0);
                }
            }
        }
        indices.into_iter().flatten().collect()
    }

    /// Removes entry `i` and its slots.
    fn remove(&mut self, i: usize, now: Nanos) {
        let (key, _) = self.map.swap_remove_index(i).expect("an index below len");
        self.held.forget(&key, now);
    }

    /// Drops the next [`SWEEP`] entries from the cursor if they have expired.
    fn sweep(&mut self, now: Nanos) -> bool {
        let mut removed = false;
        for _ in 0..SWEEP {
            if self.cursor >= self.map.len() {
                self.cursor = 0;
            }
            match self.map.get_index(self.cursor) {
                Some((_, entry)) if entry.expires <= now => {
                    self.remove(self.cursor, now);
                    removed = true;
                }
                Some(_) => self.cursor += 1,
                None => break,
            }
        }
        removed
    }

    /// The entry to evict: of [`SAMPLES`] drawn at random (or all, if there are no more), an
    /// expired one, else the least recently used. Entries of `keep` (the caller being checked) are never chosen.
    fn victim(&mut self, keep: [u64; 2], now: Nanos) -> Option<usize> {
        let len = self.map.len();
        let mut best: Option<(bool, u64, usize)> = None;
        // A shard this small is looked at whole.
        let whole = len <= SAMPLES;
        for n in 0..SAMPLES.min(len) {
            let i = if whole { n } else { self.rng.usize(..len) };
            let (key, entry) = self.map.get_index(i).expect("drawn below len");
            let rank = (entry.expires > now, entry.used, i);
            if key.caller != keep && best.is_none_or(|b| rank < b) {
                best = Some(rank);
            }
        }
        // Only when every draw was `keep`'s: a tiny shard. Any other entry will do.
        best.map(|(_, _, i)| i).or_else(|| self.map.keys().position(|k| k.caller != keep))
    }
}

/// The in-memory store.
pub struct Memory {
    shards: Box<[Mutex<Shard>]>,
    max_keys: u64,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("shards", &self.shards.len())
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl Memory {
    /// A store holding at most `max_keys` (caller, scope) entries (or, if more, the scopes of
    /// one request: a request is never refused room).
    pub fn new(max_keys: u64) -> Memory {
        let count = (max_keys / MIN_SHARD_KEYS).clamp(1, MAX_SHARDS).next_power_of_two();
        let shards = (0..count)
            .map(|i| {
                let capacity = max_keys / count + u64::from(i < max_keys % count);
                Mutex::new(Shard {
                    map: IndexMap::default(),
                    held: Held::default(),
                    closed: ClosedTickets::default(),
                    capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
                    rng: fastrand::Rng::with_seed(i),
                    cursor: 0,
                    clock: 0,
                })
            })
            .collect();
        Memory { shards, max_keys }
    }

    /// Entries held now, some of which may have expired and not been reclaimed yet.
    pub fn live_keys(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().map.len() as u64).sum()
    }

    /// Concurrency slots whose hold has not ended at `now`: requests in flight, exactly. Reads
    /// every slot, one shard at a time (for a metrics scrape, not for checks).
    pub fn in_flight(&self, now: Nanos) -> u64 {
        self.shards.iter().map(|s| s.lock().held.live(now)).sum()
    }

    /// Slots freed by their hold (not by a close, nor by eviction) since the start, as checks
    /// and evictions find them.
    pub fn slots_ended(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().held.ended).sum()
    }

    /// The shard of `caller`: a multiplicative hash of both halves, so that callers which
    /// differ in any bits (tests use small integers) spread over all shards.
    fn shard(&self, caller: [u64; 2]) -> &Mutex<Shard> {
        let mixed = (caller[0] ^ caller[1].rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.shards[(mixed >> 40) as usize & (self.shards.len() - 1)]
    }

    /// See [`super::Store::check`]: [`Memory::check_ticket`] under a random ticket.
    pub fn check<'p>(
        &self,
        caller: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
        counting: Counting,
    ) -> Decision<'p> {
        self.check_ticket(caller, scopes, now, counting, fastrand::u128(..))
    }

    /// See [`super::Store::check_ticket`].
    pub fn check_ticket<'p>(
        &self,
        caller: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
        counting: Counting,
        ticket: TicketId,
    ) -> Decision<'p> {
        debug_assert!(scopes.windows(2).all(|w| w[0].id < w[1].id), "scopes sorted and distinct");
        let halves = [(caller.0 >> 64) as u64, caller.0 as u64];
        let keys: SmallVec<[EntryKey; 4]> =
            scopes.iter().map(|s| EntryKey { caller: halves, scope: s.id }).collect();
        // Slots this request may take, one per scope with a concurrency limit.
        let slotted = scopes.iter().filter(|s| s.holds_slot()).count();
        let mut guard = self.shard(halves).lock();
        let shard = &mut *guard;
        shard.clock += 1;
        let tick = shard.clock;
        let indices = shard.entries(&keys, halves, slotted, now, tick);
        let (map, held) = (&mut shard.map, &mut shard.held);

        // Check every limit, then count each scope (the enforced ones all or none, each dry-run
        // one on its own), then read each verdict from the state left behind, so that its wait
        // already holds this request. A concurrency limit's state is read off its slots, pruned
        // first; an admitted request takes a slot whatever `counting` says, a denied one none.
        let mut admitted: SmallVec<[bool; 8]> = SmallVec::new();
        let mut enforced_pass = true;
        for ((scope, &index), key) in scopes.iter().zip(&indices).zip(&keys) {
            let states = &mut map[index].states;
            prune(states, scope.limits);
            for (limit, (_, state)) in scope.limits.iter().zip(states.iter_mut()) {
                if limit.is_concurrent() {
                    *state = held.prune(key, now);
                }
                limit.roll(state, now);
                let admits = limit.admits(state, now, limit.weight(scope.cost));
                enforced_pass &= admits || scope.mode == Mode::DryRun;
                admitted.push(admits);
            }
        }
        let mut verdicts = Verdicts::new();
        let mut rest = &admitted[..];
        for ((scope, &index), key) in scopes.iter().zip(&indices).zip(&keys) {
            let (mine, after) = rest.split_at(scope.limits.len());
            rest = after;
            let pass = match scope.mode {
                Mode::Enforce => enforced_pass,
                Mode::DryRun => mine.iter().all(|&a| a),
            };
            let record = pass || counting == Counting::Everything;
            let entry = &mut map[index];
            for ((limit, (_, state)), &allowed) in scope.limits.iter().zip(entry.states.iter_mut()).zip(mine)
            {
                let weight = limit.weight(scope.cost);
                if let Algorithm::Concurrent { hold, .. } = limit.algorithm {
                    if pass {
                        *state = held.insert(*key, ticket, slot_end(hold, now));
                    }
                } else if record {
                    limit.record(state, now, weight);
                }
                let verdict = limit.verdict(state, now, allowed, weight);
                verdicts.push(Judged { limit, rule: scope.rule, mode: scope.mode, verdict });
            }
            entry.expires = expiry(scope.limits, &entry.states, held, key, now);
            entry.used = tick;
        }
        if enforced_pass {
            Decision::Allowed(verdicts)
        } else {
            Decision::Denied(verdicts)
        }
    }

    /// See [`super::Store::close`]. Closed tickets are remembered per shard, apart from
    /// `max_keys`, as many as it allows entries.
    pub fn close<'p>(
        &self,
        caller: Key,
        ticket: TicketId,
        expires: Nanos,
        scopes: &[Scope<'p>],
        cost: u32,
        now: Nanos,
    ) -> Closed<'p> {
        if now >= expires {
            return Closed::Unknown;
        }
        let halves = [(caller.0 >> 64) as u64, caller.0 as u64];
        let mut guard = self.shard(halves).lock();
        let shard = &mut *guard;
        if !shard.closed.mark(halves, ticket, expires, now, shard.capacity, &mut shard.rng) {
            return Closed::Unknown;
        }
        shard.clock += 1;
        let tick = shard.clock;
        let key = |s: &Scope<'_>| EntryKey { caller: halves, scope: s.id };
        let released = scopes
            .iter()
            .filter(|s| s.holds_slot())
            .map(|s| u32::from(shard.held.release(&key(s), ticket, now)))
            .sum();
        // The reported cost, on top of what admission took: counted without asking whether it
        // fits, so it may take a limit over its quota (a bucket no further than its debt cap).
        let charges = |s: &&Scope<'p>| cost > 0 && s.limits.iter().any(Limit::counts_cost);
        let keys: SmallVec<[EntryKey; 4]> = scopes.iter().filter(charges).map(key).collect();
        let indices = shard.entries(&keys, halves, 0, now, tick);
        let (map, held) = (&mut shard.map, &mut shard.held);
        let mut charged = Vec::new();
        for ((scope, &index), key) in scopes.iter().filter(charges).zip(&indices).zip(&keys) {
            let entry = &mut map[index];
            prune(&mut entry.states, scope.limits);
            for (limit, (_, state)) in scope.limits.iter().zip(entry.states.iter_mut()) {
                if limit.counts_cost() {
                    limit.roll(state, now);
                    let allowed = limit.admits(state, now, cost);
                    limit.record(state, now, cost);
                    let verdict = limit.verdict(state, now, allowed, 1);
                    charged.push(Judged { limit, rule: scope.rule, mode: scope.mode, verdict });
                }
            }
            entry.expires = expiry(scope.limits, &entry.states, held, key, now);
            entry.used = tick;
        }
        Closed::Closed { released, charged }
    }
}

/// When an entry of `limits` in `states` (and `held`'s slots of `key`) stops mattering: when
/// its last window, bucket debt or slot ends, `now` at the earliest.
fn expiry(limits: &[Limit], states: &States, held: &Held, key: &EntryKey, now: Nanos) -> Nanos {
    let ends = limits.iter().zip(states).map(|(limit, (_, state))| {
        if limit.is_concurrent() {
            held.last_end(key)
        } else {
            limit.expires(state)
        }
    });
    ends.fold(now, Nanos::max)
}

/// One entry as snapshots see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Saved {
    pub caller: [u64; 2],
    pub scope: u32,
    /// Nanoseconds since the epoch after which the entry no longer matters.
    pub expires: Nanos,
    pub states: States,
}

impl Memory {
    /// The most entries this store holds.
    pub(crate) fn capacity(&self) -> u64 {
        self.max_keys
    }

    /// A copy of every entry that holds counts, one shard at a time: each shard is consistent,
    /// the whole is not a point in time. A shard is locked only while it is copied, a
    /// thousandth of the store or less, so checks wait at most that long.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Saved> + '_ {
        self.shards.iter().flat_map(|shard| {
            let shard = shard.lock();
            let copied: Vec<Saved> = shard
                .map
                .iter()
                .filter(|(_, e)| !e.states.is_empty())
                .map(|(k, e)| Saved {
                    caller: k.caller,
                    scope: k.scope,
                    expires: e.expires,
                    states: e.states.clone(),
                })
                .collect();
            copied
        })
    }

    /// Puts `saved` back, as the least recently used, unless an entry for its caller and scope
    /// exists already (whose counts are newer) or its shard is full. Returns whether it was
    /// inserted.
    pub(crate) fn restore(&self, saved: Saved) -> bool {
        let key = EntryKey { caller: saved.caller, scope: saved.scope };
        let mut shard = self.shard(saved.caller).lock();
        if shard.map.len() >= shard.capacity || shard.map.contains_key(&key) {
            return false;
        }
        shard.map.insert(key, Entry { expires: saved.expires, used: 0, states: saved.states });
        true
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
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::limiter::{Algorithm, Window, SECOND};

    /// 2026-11-23 12:00:00 UTC.
    const NOON: Nanos = 1_795_435_200 * SECOND;

    fn per(requests: u32, window: Window) -> Limit {
        Limit::new("l", Algorithm::Fixed { requests: NonZeroU32::new(requests).unwrap(), window })
    }

    fn hit(memory: &Memory, caller: u128, limits: &[Limit], now: Nanos) -> bool {
        memory.check(Key(caller), &[Scope::enforced(0, limits)], now, Counting::AllowedOnly).is_allowed()
    }

    fn concurrent(max: u32, hold: Nanos) -> Limit {
        Limit::new("concurrent", Algorithm::Concurrent { max: NonZeroU32::new(max).unwrap(), hold })
    }

    #[test]
    fn at_most_max_requests_hold_a_slot_until_the_oldest_hold_ends() {
        let memory = Memory::new(100);
        let limits = [concurrent(2, 60 * SECOND), per(100, Window::Day)];
        let scopes = [Scope::enforced(0, &limits)];
        let check = |now, ticket| memory.check_ticket(Key(1), &scopes, now, Counting::AllowedOnly, ticket);
        let first = check(NOON, 1);
        assert!(first.is_allowed());
        assert_eq!(first.verdicts()[0].verdict.remaining, 1);
        let second = check(NOON + 10 * SECOND, 2);
        assert!(second.is_allowed());
        let v = second.verdicts()[0].verdict;
        assert_eq!((v.remaining, v.reset, v.retry_after), (0, 50 * SECOND, 50 * SECOND));
        let third = check(NOON + 20 * SECOND, 3);
        assert!(!third.is_allowed());
        assert_eq!(third.verdicts()[0].verdict.retry_after, 40 * SECOND);
        assert_eq!(third.verdicts()[1].verdict.remaining, 98, "the day limit did not count it");
        assert_eq!(memory.in_flight(NOON + 20 * SECOND), 2);
        // The first slot frees itself at its hold, not a nanosecond before.
        assert!(!check(NOON + 60 * SECOND - 1, 4).is_allowed());
        assert!(check(NOON + 60 * SECOND, 5).is_allowed());
        assert_eq!(memory.slots_ended(), 1);
        assert_eq!(memory.in_flight(NOON + 60 * SECOND), 2);
    }

    #[test]
    fn a_denied_request_takes_no_slot_even_when_denials_count() {
        let memory = Memory::new(100);
        let limits = [concurrent(5, 60 * SECOND), per(1, Window::Day)];
        let scopes = [Scope::enforced(0, &limits)];
        assert!(memory.check_ticket(Key(1), &scopes, NOON, Counting::Everything, 1).is_allowed());
        let denied = memory.check_ticket(Key(1), &scopes, NOON, Counting::Everything, 2);
        assert!(!denied.is_allowed());
        assert_eq!(denied.verdicts()[0].verdict.remaining, 4);
        assert_eq!(memory.in_flight(NOON), 1);
    }

    #[test]
    fn slots_take_room_as_entries_do() {
        // Two entries' worth of room: one caller's entry and slot fill it, and a second
        // caller's entry evicts them (slots go with their entry).
        let memory = Memory::new(2);
        let limits = [concurrent(5, 60 * SECOND)];
        let scopes = [Scope::enforced(0, &limits)];
        assert!(memory.check_ticket(Key(1), &scopes, NOON, Counting::AllowedOnly, 1).is_allowed());
        assert_eq!((memory.live_keys(), memory.in_flight(NOON)), (1, 1));
        assert!(memory.check_ticket(Key(2), &scopes, NOON, Counting::AllowedOnly, 2).is_allowed());
        assert_eq!((memory.live_keys(), memory.in_flight(NOON)), (1, 1));
        let held: Vec<[u64; 2]> = memory.entries().map(|s| s.caller).collect();
        assert_eq!(held, [[0, 2]]);
        assert_eq!(memory.slots_ended(), 0, "an evicted slot did not end by its hold");
    }

    #[test]
    fn an_entry_lasts_as_long_as_its_last_slot() {
        let memory = Memory::new(10);
        let limits = [concurrent(5, 3600 * SECOND)];
        let scopes = [Scope::enforced(0, &limits)];
        memory.check_ticket(Key(1), &scopes, NOON, Counting::AllowedOnly, 1);
        memory.check_ticket(Key(1), &scopes, NOON + SECOND, Counting::AllowedOnly, 2);
        let saved: Vec<Saved> = memory.entries().collect();
        assert_eq!(saved[0].expires, NOON + 3601 * SECOND);
    }

    #[test]
    fn closing_frees_the_slot_once() {
        let memory = Memory::new(100);
        let limits = [concurrent(1, 60 * SECOND)];
        let scopes = [Scope::enforced(0, &limits)];
        let hour = NOON + 3600 * SECOND;
        assert!(memory.check_ticket(Key(1), &scopes, NOON, Counting::AllowedOnly, 1).is_allowed());
        assert!(!memory.check_ticket(Key(1), &scopes, NOON, Counting::AllowedOnly, 2).is_allowed());
        let closed = memory.close(Key(1), 1, hour, &scopes, 0, NOON + SECOND);
        assert_eq!(closed, Closed::Closed { released: 1, charged: Vec::new() });
        assert_eq!(memory.close(Key(1), 1, hour, &scopes, 0, NOON + SECOND), Closed::Unknown);
        assert!(memory.check_ticket(Key(1), &scopes, NOON + SECOND, Counting::AllowedOnly, 3).is_allowed());
        // Another caller's ticket of the same id is its own.
        assert_eq!(
            memory.close(Key(2), 1, hour, &scopes, 0, NOON),
            Closed::Closed { released: 0, charged: vec![] }
        );
        assert_eq!(memory.slots_ended(), 0);
    }

    #[test]
    fn a_reported_cost_may_take_a_quota_over_and_the_next_request_is_denied() {
        let memory = Memory::new(100);
        let limits = [per(20, Window::Day), per(10, Window::Day).counting(crate::limiter::Counts::Requests)];
        let scopes = [Scope::enforced(0, &limits).costing(5)];
        for ticket in 0..3 {
            assert!(memory.check_ticket(Key(1), &scopes, NOON, Counting::AllowedOnly, ticket).is_allowed());
        }
        let Closed::Closed { released, charged } =
            memory.close(Key(1), 0, NOON + 60 * SECOND, &scopes, 12, NOON)
        else {
            panic!("the ticket is open")
        };
        assert_eq!(released, 0);
        let [charge] = &charged[..] else { panic!("only the limit counting cost: {charged:?}") };
        assert!(!charge.verdict.allowed, "12 did not fit in the 5 left");
        assert_eq!((charge.verdict.remaining, &*charge.limit.name), (0, "l"));
        let denied = memory.check(Key(1), &[Scope::enforced(0, &limits)], NOON, Counting::AllowedOnly);
        assert!(!denied.is_allowed());
        assert_eq!(denied.verdicts()[1].verdict.remaining, 7, "requests counted the 3 only");
    }

    #[test]
    fn a_ticket_past_its_expiry_closes_nothing() {
        let memory = Memory::new(100);
        let limits = [concurrent(1, 60 * SECOND), per(20, Window::Day)];
        let scopes = [Scope::enforced(0, &limits)];
        memory.check_ticket(Key(1), &scopes, NOON, Counting::AllowedOnly, 1);
        let expires = NOON + 60 * SECOND;
        assert_eq!(memory.close(Key(1), 1, expires, &scopes, 5, expires), Closed::Unknown);
        let d = memory.check(Key(1), &scopes[..], NOON + SECOND, Counting::AllowedOnly);
        assert_eq!(d.verdicts()[1].verdict.remaining, 19, "charged nothing");
        assert!(!d.is_allowed(), "freed nothing");
    }

    #[test]
    fn closed_tickets_are_remembered_within_bounds() {
        let memory = Memory::new(8);
        for ticket in 0..1000 {
            let expires = NOON + (1 + ticket as u64 % 50) * SECOND;
            assert!(matches!(memory.close(Key(1), ticket, expires, &[], 0, NOON), Closed::Closed { .. }));
        }
        let remembered: usize = memory.shards.iter().map(|s| s.lock().closed.until.len()).sum();
        assert_eq!(remembered, 8);
        // The ones remembered are still refused.
        let shard = memory.shard([0, 1]).lock();
        let kept: Vec<(TicketId, Nanos)> = shard.closed.until.iter().map(|(&(_, t), &e)| (t, e)).collect();
        drop(shard);
        for (ticket, expires) in kept {
            assert_eq!(memory.close(Key(1), ticket, expires, &[], 0, NOON), Closed::Unknown);
        }
    }

    #[test]
    fn an_entry_is_104_bytes_inline() {
        // What BENCHMARKS.md's bytes per key rest on: IndexMap keeps (hash, key, value) inline.
        assert_eq!(std::mem::size_of::<usize>() + std::mem::size_of::<(EntryKey, Entry)>(), 104);
    }

    #[test]
    fn shards_split_max_keys_exactly() {
        for max_keys in [1, 7, 1023, 1024, 5000, 1_000_000, 1_000_003] {
            let memory = Memory::new(max_keys);
            let total: usize = memory.shards.iter().map(|s| s.lock().capacity).sum();
            assert_eq!(total as u64, max_keys);
            assert!(memory.shards.len().is_power_of_two() && memory.shards.len() as u64 <= MAX_SHARDS);
        }
    }

    #[test]
    fn an_entry_lasts_until_its_longest_window_ends() {
        let memory = Memory::new(10);
        let limits = [per(10, Window::Minute), per(1000, Window::Day)];
        assert!(hit(&memory, 1, &limits, NOON));
        let saved: Vec<Saved> = memory.entries().collect();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].expires, NOON + 12 * 3600 * SECOND, "the end of the day");
    }

    #[test]
    fn a_caller_pacing_its_requests_is_never_forgotten_before_its_window_ends() {
        // Every other caller's entry has expired and is reclaimed; the daily one is not.
        let memory = Memory::new(4);
        let daily = [per(2, Window::Day)];
        let minute = [per(100, Window::Minute)];
        assert!(hit(&memory, 1, &daily, NOON));
        for i in 0..100u64 {
            // A crowd of short-lived callers, six minutes apart.
            assert!(hit(&memory, 1000 + u128::from(i), &minute, NOON + i * 3600 * SECOND / 10));
        }
        assert!(hit(&memory, 1, &daily, NOON + 3600 * SECOND));
        assert!(!hit(&memory, 1, &daily, NOON + 2 * 3600 * SECOND), "the daily count survived");
    }

    #[test]
    fn a_full_shard_evicts_expired_entries_before_live_ones() {
        let memory = Memory::new(3);
        let minute = [per(5, Window::Minute)];
        let day = [per(5, Window::Day)];
        assert!(hit(&memory, 1, &day, NOON));
        assert!(hit(&memory, 2, &day, NOON));
        assert!(hit(&memory, 3, &minute, NOON));
        // Two minutes later caller 3's entry has expired: caller 4 takes its place.
        for caller in 4..10 {
            assert!(hit(&memory, caller, &day, NOON + 120 * SECOND));
            let held: Vec<[u64; 2]> = memory.entries().map(|s| s.caller).collect();
            assert_eq!(held.len(), 3);
            assert!(!held.contains(&[0, 3]), "the expired entry went first");
            if caller == 4 {
                assert!(held.contains(&[0, 1]) && held.contains(&[0, 2]), "live ones stayed: {held:?}");
            }
        }
    }

    #[test]
    fn one_request_with_more_scopes_than_the_store_holds_is_still_counted() {
        let memory = Memory::new(1);
        let limits = [per(1, Window::Day)];
        let scopes = [Scope::enforced(0, &limits), Scope::enforced(1, &limits)];
        assert!(memory.check(Key(1), &scopes, NOON, Counting::AllowedOnly).is_allowed());
        assert!(!memory.check(Key(1), &scopes, NOON, Counting::AllowedOnly).is_allowed());
        // The next caller takes the room back.
        assert!(hit(&memory, 2, &limits, NOON));
        assert_eq!(memory.live_keys(), 1);
    }
}

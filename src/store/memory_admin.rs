//! What the admin API asks of the memory store: [`Memory::peek`] (what a request arriving now
//! would meet, nothing counted) and [`Memory::reset`] (forget a caller's counts).
//!
//! A peek copies the caller's states out under the shard lock, then answers from the copies
//! without it: the limits as they stand ([`Peek::now`]), and the decision a check would give
//! ([`Peek::next`]), which is the real [`Memory::check`] run on a scratch store holding only
//! those copies, so that it can never drift from what a check decides. The Redis store answers
//! its peeks the same way, from the states it reads ([`peeked`]).

use smallvec::SmallVec;

use super::{EntryKey, Memory, Saved, States};
use crate::identity::Key;
use crate::limiter::{Nanos, State};
use crate::store::{Counting, Judged, Peek, Scope, TicketId, Verdicts};

/// What a peek copies of one (caller, scope): its limits' states (`None`: never seen there), and
/// when each concurrency slot it holds ends.
pub(in crate::store) struct Copied {
    pub states: Option<States>,
    pub slots: Vec<Nanos>,
}

impl Memory {
    /// See [`crate::store::Store::peek`].
    pub fn peek<'p>(&self, caller: Key, scopes: &[Scope<'p>], now: Nanos, counting: Counting) -> Peek<'p> {
        let halves = halves(caller);
        let copies: SmallVec<[Copied; 4]> = {
            let shard = self.shard(halves).lock();
            scopes
                .iter()
                .map(|s| {
                    let key = EntryKey { caller: halves, scope: s.id };
                    let slots = shard
                        .held
                        .sets
                        .get(&key)
                        .map_or_else(Vec::new, |set| set.iter().map(|&(_, end)| end).collect());
                    Copied { states: shard.map.get(&key).map(|e| e.states.clone()), slots }
                })
                .collect()
        };
        peeked(caller, scopes, copies, now, counting)
    }

    /// See [`crate::store::Store::reset`]: removes the caller's entry of each scope and its
    /// concurrency slots, and returns how many limit states and slots they held.
    pub fn reset(&self, caller: Key, scopes: &[Scope<'_>], now: Nanos) -> u64 {
        let halves = halves(caller);
        let mut shard = self.shard(halves).lock();
        let mut cleared = 0;
        for s in scopes {
            let key = EntryKey { caller: halves, scope: s.id };
            cleared += shard.held.sets.get(&key).map_or(0, |set| set.len() as u64);
            shard.held.forget(&key, now);
            cleared += shard.map.swap_remove(&key).map_or(0, |e| e.states.len() as u64);
        }
        cleared
    }
}

/// The caller as entry keys hold it.
fn halves(caller: Key) -> [u64; 2] {
    [(caller.0 >> 64) as u64, caller.0 as u64]
}

/// The peek of `caller` at `now`, from `copies[i]`, what the store holds of `scopes[i]`.
pub(in crate::store) fn peeked<'p>(
    caller: Key,
    scopes: &[Scope<'p>],
    copies: SmallVec<[Copied; 4]>,
    now: Nanos,
    counting: Counting,
) -> Peek<'p> {
    let mut verdicts = Verdicts::new();
    for (scope, copied) in scopes.iter().zip(&copies) {
        for limit in scope.limits {
            let mut state = if limit.is_concurrent() {
                State::holding(copied.slots.iter().copied().filter(|&end| end > now))
            } else {
                let kept = copied.states.iter().flatten().find(|(id, _)| *id == limit.id);
                kept.map_or_else(State::default, |(_, s)| *s)
            };
            limit.roll(&mut state, now);
            let weight = limit.weight(scope.cost);
            let allowed = limit.admits(&state, now, weight);
            let verdict = limit.verdict(&state, now, allowed, weight);
            verdicts.push(Judged { limit, rule: scope.rule, mode: scope.mode, verdict });
        }
    }
    // Room for every copied entry and slot, and the slots the check may add.
    let slots: usize = copies.iter().map(|c| c.slots.len()).sum();
    let scratch = Memory::new((2 * scopes.len() + slots) as u64);
    let halves = halves(caller);
    {
        let mut shard = scratch.shard(halves).lock();
        for (scope, copied) in scopes.iter().zip(&copies) {
            let key = EntryKey { caller: halves, scope: scope.id };
            for (i, &end) in copied.slots.iter().enumerate() {
                // Which ticket holds a slot does not change a check's decision.
                shard.held.insert(key, i as TicketId, end);
            }
        }
    }
    for (scope, copied) in scopes.iter().zip(copies) {
        if let Some(states) = copied.states {
            scratch.restore(Saved { caller: halves, scope: scope.id, expires: Nanos::MAX, states });
        }
    }
    Peek { now: verdicts, next: scratch.check(caller, scopes, now, counting) }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::limiter::{Algorithm, Limit, Window, SECOND};
    use crate::store::{Decision, Mode};

    /// 2026-11-23 12:00:00 UTC.
    const NOON: Nanos = 1_795_435_200 * SECOND;

    fn fixed(requests: u32) -> Limit {
        Limit::new(
            "minute",
            Algorithm::Fixed { requests: NonZeroU32::new(requests).unwrap(), window: Window::Minute },
        )
    }

    fn bucket(burst: u32) -> Limit {
        Limit::new(
            "bucket",
            Algorithm::Gcra { emission: SECOND, burst: NonZeroU32::new(burst).unwrap(), max_delay: 0 },
        )
    }

    #[test]
    fn a_peek_counts_nothing_and_says_what_the_next_check_decides() {
        let memory = Memory::new(100);
        let plan = [fixed(3)];
        let rule = [bucket(2)];
        let scopes = [Scope::enforced(0, &plan), Scope::enforced(7, &rule)];
        for n in 0..4u32 {
            let peek = memory.peek(Key(1), &scopes, NOON, Counting::AllowedOnly);
            let remaining: Vec<u32> = peek.now.iter().map(|j| j.verdict.remaining).collect();
            assert_eq!(remaining, [3 - n.min(2), 2 - n.min(2)], "after {n} checks");
            // Peeking again changes nothing, and the check that follows decides what the
            // peek said it would.
            assert_eq!(memory.peek(Key(1), &scopes, NOON, Counting::AllowedOnly), peek);
            assert_eq!(memory.check(Key(1), &scopes, NOON, Counting::AllowedOnly), peek.next);
        }
        let peek = memory.peek(Key(1), &scopes, NOON, Counting::AllowedOnly);
        assert!(!peek.next.is_allowed());
        assert_eq!(peek.now.iter().map(|j| j.verdict.allowed).collect::<Vec<_>>(), [true, false]);
    }

    #[test]
    fn a_peek_of_a_caller_never_seen_holds_nothing() {
        let memory = Memory::new(10);
        let plan = [fixed(3)];
        let peek = memory.peek(Key(9), &[Scope::enforced(0, &plan)], NOON, Counting::AllowedOnly);
        assert_eq!(peek.now[0].verdict.remaining, 3);
        assert!(matches!(&peek.next, Decision::Allowed(v) if v[0].verdict.remaining == 2));
        assert_eq!(memory.live_keys(), 0, "a peek makes no entry");
    }

    #[test]
    fn a_dry_run_scope_is_peeked_on_its_own() {
        let memory = Memory::new(10);
        let plan = [fixed(5)];
        let rule = [fixed(1)];
        let dry = Scope { mode: Mode::DryRun, ..Scope::enforced(3, &rule) };
        let scopes = [Scope::enforced(0, &plan), dry];
        memory.check(Key(2), &scopes, NOON, Counting::AllowedOnly);
        let peek = memory.peek(Key(2), &scopes, NOON, Counting::AllowedOnly);
        assert!(peek.next.is_allowed(), "a dry-run limit never denies");
        assert!(!peek.now[1].verdict.allowed);
        assert_eq!(memory.check(Key(2), &scopes, NOON, Counting::AllowedOnly), peek.next);
    }

    #[test]
    fn a_reset_forgets_the_scopes_named_and_only_them() {
        let memory = Memory::new(100);
        let plan = [fixed(1)];
        let rule = [fixed(1), bucket(1)];
        let both = [Scope::enforced(0, &plan), Scope::enforced(4, &rule)];
        assert!(memory.check(Key(3), &both, NOON, Counting::AllowedOnly).is_allowed());
        assert!(memory.check(Key(4), &both, NOON, Counting::AllowedOnly).is_allowed());
        assert!(!memory.check(Key(3), &both, NOON, Counting::AllowedOnly).is_allowed());

        assert_eq!(memory.reset(Key(3), &both[1..], NOON), 2, "the rule's two limits");
        let rule_only = [both[1]];
        assert!(memory.check(Key(3), &rule_only, NOON, Counting::AllowedOnly).is_allowed());
        assert!(
            !memory.check(Key(3), &both[..1], NOON, Counting::AllowedOnly).is_allowed(),
            "the plan kept its count"
        );
        assert_eq!(memory.reset(Key(3), &both, NOON), 3, "the plan's limit and the rule's two");
        assert!(memory.check(Key(3), &both, NOON, Counting::AllowedOnly).is_allowed());
        assert!(
            !memory.check(Key(4), &both, NOON, Counting::AllowedOnly).is_allowed(),
            "another caller kept its counts"
        );
        assert_eq!(memory.reset(Key(5), &both, NOON), 0, "nothing to forget");
    }
}

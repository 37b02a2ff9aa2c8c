//! The memory store: atomic check-and-count under contention, bounded memory, and counters
//! that survive a flood of other callers.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use quotagate::identity::Key;
use quotagate::limiter::{Algorithm, Limit, Window, SECOND};
use quotagate::store::{Counting, Memory, Scope};

const NOW: u64 = 1_795_460_700 * SECOND;

fn per_minute(name: &str, n: u32) -> Limit {
    Limit::new(name, Algorithm::Fixed { requests: NonZeroU32::new(n).unwrap(), window: Window::Minute })
}

fn per_day(name: &str, n: u32) -> Limit {
    Limit::new(name, Algorithm::Fixed { requests: NonZeroU32::new(n).unwrap(), window: Window::Day })
}

#[test]
fn threads_racing_on_one_key_get_exactly_the_quota() {
    let store = Arc::new(Memory::new(1000));
    let limits = vec![per_minute("minute", 100), per_day("day", 1000)];
    let passed = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (store, limits, passed) = (store.clone(), &limits, passed.clone());
            s.spawn(move || {
                for _ in 0..250 {
                    let d = store.check(Key(7), &[Scope::enforced(0, limits)], NOW, Counting::AllowedOnly);
                    if d.is_allowed() {
                        passed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(passed.load(Ordering::Relaxed), 100);
}

#[test]
fn all_scopes_pass_or_none_is_counted() {
    let store = Memory::new(1000);
    let plan = vec![per_minute("minute", 5)];
    let rule = vec![per_minute("rule.minute", 3)];
    let scopes = [Scope::enforced(0, &plan), Scope::enforced(9, &rule)];
    let passed =
        (0..10).filter(|_| store.check(Key(1), &scopes, NOW, Counting::AllowedOnly).is_allowed()).count();
    assert_eq!(passed, 3);
    // The plan scope counted only the 3 that passed: 2 left for requests outside the rule.
    let plan_only = [Scope::enforced(0, &plan)];
    let d = store.check(Key(1), &plan_only, NOW, Counting::AllowedOnly);
    assert!(d.is_allowed());
    assert_eq!(d.verdicts()[0].verdict.remaining, 1);
}

#[test]
fn memory_stays_bounded_by_max_keys() {
    let store = Memory::new(1000);
    let limits = vec![per_minute("minute", 10)];
    for caller in 0..20_000u128 {
        store.check(Key(caller), &[Scope::enforced(0, &limits)], NOW, Counting::AllowedOnly);
    }
    let live = store.live_keys();
    assert!(live <= 1000, "{live} entries for max_keys = 1000");
    assert!(live >= 500, "LRU keeps the most recent ones ({live})");
}

#[test]
fn an_active_caller_keeps_its_count_through_a_flood_of_new_ones() {
    let store = Memory::new(2000);
    let limits = vec![per_minute("minute", 10)];
    let scopes = [Scope::enforced(0, &limits)];
    let victim = Key(u128::MAX);
    let mut passed = 0;
    for round in 0..20u128 {
        // 500 fresh callers between two requests of the victim: fewer than max_keys.
        for i in 0..500 {
            store.check(Key(round * 1000 + i), &scopes, NOW, Counting::AllowedOnly);
        }
        passed += usize::from(store.check(victim, &scopes, NOW, Counting::AllowedOnly).is_allowed());
    }
    assert_eq!(passed, 10, "the victim's counter was evicted");
}

//! Concurrency slots under any sequence of admissions, closes (double closes too) and time
//! steps, with time injected: no scope ever has more than its `concurrent` requests in flight;
//! every verdict of a concurrency limit says exactly how many slots are free (against a model of
//! the slots each admitted ticket holds, freed by a close or at their hold); closing a ticket a
//! second time, or after it expired, does nothing; and the memory store and the Redis store (a
//! real redis-server, told the time) give the same decisions and the same closes.

mod support;

use std::cell::{Cell, RefCell};
use std::num::NonZeroU32;

use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestRunner};
use quotagate::identity::Key;
use quotagate::limiter::{slot_end, Algorithm, Limit, Nanos, Window, SECOND};
use quotagate::policy::slot_hold;
use quotagate::store::{Closed, Counting, Decision, Memory, Mode, Scope, Store, TicketId};
use support::RedisServer;

/// 2026-01-01 00:00:00 UTC.
const T0: Nanos = 1_767_225_600 * SECOND;

/// A scope of the case: its id, its limits (a concurrency limit, maybe a daily quota counting
/// cost) and whether it is dry-run.
type Pool = Vec<(u32, Vec<Limit>, bool)>;

/// Holds of at least 10 s (plus any nanoseconds): Redis expires a set by the wall clock a
/// little after its last slot's hold, which must not pass while a case runs.
fn pool() -> impl Strategy<Value = Pool> {
    let hold = prop_oneof![Just(10 * SECOND), Just(60 * SECOND), 10 * SECOND..3600 * SECOND];
    let quota = prop::option::of(1u32..30);
    let scope = (1u32..4, hold, quota, prop::bool::weighted(0.25));
    prop::collection::vec(scope, 1..4).prop_map(|scopes| {
        scopes
            .into_iter()
            .enumerate()
            .map(|(i, (max, hold, quota, dry_run))| {
                let mut limits = vec![Limit::new(
                    "concurrent",
                    Algorithm::Concurrent { max: NonZeroU32::new(max).unwrap(), hold },
                )];
                limits.extend(quota.map(|q| {
                    let requests = NonZeroU32::new(q).unwrap();
                    Limit::new("day", Algorithm::Fixed { requests, window: Window::Day })
                }));
                (i as u32 * 3 + 1, limits, dry_run)
            })
            .collect()
    })
}

#[derive(Clone, Debug)]
enum Op {
    /// A request in the scopes of `mask` (bits of the pool), of `cost`.
    Admit { mask: u8, cost: u32, count_denied: bool },
    /// Closes the `pick`-th ticket issued (modulo), reporting `cost`; `twice`: once more at once.
    Close { pick: usize, cost: u32, twice: bool },
    /// Time passes: `Ok(gap)`, or `Err((pick, miss))` to the end of the `pick`-th live slot,
    /// `miss` nanoseconds off (-1, 0 or 1).
    Wait(Result<Nanos, (usize, i8)>),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let cost = prop_oneof![3 => Just(0u32), 3 => 1u32..5, 1 => 1u32..100];
    let admit = (any::<u8>(), 1u32..6, any::<bool>()).prop_map(|(mask, cost, count_denied)| Op::Admit {
        mask,
        cost,
        count_denied,
    });
    let close = (any::<usize>(), cost, prop::bool::weighted(0.3)).prop_map(|(pick, cost, twice)| Op::Close {
        pick,
        cost,
        twice,
    });
    let gap = prop_oneof![Just(0u64), 0..SECOND, 0..3600 * SECOND];
    let wait = prop_oneof![gap.prop_map(Ok), (any::<usize>(), -1i8..=1).prop_map(Err)].prop_map(Op::Wait);
    prop::collection::vec(prop_oneof![4 => admit, 3 => close, 3 => wait], 1..50)
}

/// A ticket the case issued: the scopes it names (ids), when it expires, whether it was closed.
struct Ticket {
    id: TicketId,
    scopes: Vec<u32>,
    expires: Nanos,
    closed: bool,
}

/// What the case knows of the slots: per scope id, the tickets holding one and their ends.
#[derive(Default)]
struct Model {
    slots: std::collections::HashMap<u32, Vec<(TicketId, Nanos)>>,
    /// Slots that ended by their hold.
    ended: usize,
}

impl Model {
    fn live(&mut self, scope: u32, now: Nanos) -> &mut Vec<(TicketId, Nanos)> {
        let slots = self.slots.entry(scope).or_default();
        let before = slots.len();
        slots.retain(|&(_, end)| end > now);
        self.ended += before - slots.len();
        slots
    }

    fn in_flight(&mut self, now: Nanos) -> u64 {
        let ids: Vec<u32> = self.slots.keys().copied().collect();
        ids.into_iter().map(|id| self.live(id, now).len() as u64).sum()
    }
}

struct Stores {
    runtime: tokio::runtime::Runtime,
    redis: Store,
    _server: RedisServer,
}

impl Stores {
    fn start() -> Stores {
        let server = RedisServer::start();
        let (runtime, redis) = support::redis::caller_clock_store(&server, false);
        Stores { runtime, redis, _server: server }
    }
}

fn scope<'p>(pool: &'p Pool, id: u32, cost: u32) -> Scope<'p> {
    let (_, limits, dry_run) = pool.iter().find(|(i, _, _)| *i == id).expect("an id of the pool");
    let mode = if *dry_run { Mode::DryRun } else { Mode::Enforce };
    Scope { id, mode, rule: None, limits, cost: cost.max(1) }
}

/// How often the cases did what the property is about.
#[derive(Default)]
struct Seen {
    refused: usize,
    released: usize,
    ended: usize,
    double_closes: usize,
}

/// One case: every op on both stores, each answer checked against the other and the model.
fn run(
    stores: &Stores,
    caller: Key,
    pool: &Pool,
    ops: Vec<Op>,
    seen: &mut Seen,
) -> Result<(), TestCaseError> {
    let memory = Store::Memory(Memory::new(1000));
    let mut model = Model::default();
    let mut tickets: Vec<Ticket> = Vec::new();
    let mut now = T0 + 123_456_789;
    for op in ops {
        match op {
            Op::Admit { mask, cost, count_denied } => {
                let ids: Vec<u32> = pool
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0 || mask % (1 << pool.len()) == 0 && *i == 0)
                    .map(|(_, (id, _, _))| *id)
                    .collect();
                let scopes: Vec<Scope<'_>> = ids.iter().map(|&id| scope(pool, id, cost)).collect();
                let counting = if count_denied { Counting::Everything } else { Counting::AllowedOnly };
                let id = tickets.len() as TicketId + 1;
                let m = stores
                    .runtime
                    .block_on(memory.check_ticket(caller, &scopes, now, counting, id))
                    .expect("decides");
                let r = stores
                    .runtime
                    .block_on(stores.redis.check_ticket(caller, &scopes, now, counting, id))
                    .expect("decides");
                prop_assert_eq!(&m, &r, "at {} for {:?}", now, scopes);
                let verdicts = m.verdicts();
                let mut at = 0;
                for s in &scopes {
                    let mine = &verdicts[at..at + s.limits.len()];
                    at += s.limits.len();
                    let passed = match s.mode {
                        Mode::Enforce => matches!(m, Decision::Allowed(_)),
                        Mode::DryRun => mine.iter().all(|j| j.verdict.allowed),
                    };
                    let Algorithm::Concurrent { max, hold } = s.limits[0].algorithm else { unreachable!() };
                    let slots = model.live(s.id, now);
                    prop_assert_eq!(mine[0].verdict.allowed, slots.len() < max.get() as usize, "a free slot");
                    seen.refused += usize::from(!mine[0].verdict.allowed);
                    if passed {
                        slots.push((id, slot_end(hold, now)));
                    }
                    prop_assert!(
                        slots.len() <= max.get() as usize,
                        "{} in flight, at most {}",
                        slots.len(),
                        max
                    );
                    let v = mine[0].verdict;
                    prop_assert_eq!(v.remaining as usize, max.get() as usize - slots.len(), "free slots");
                    let oldest = slots.iter().map(|&(_, end)| end).min();
                    prop_assert_eq!(v.reset, oldest.map_or(0, |end| end - now), "until the oldest slot ends");
                    prop_assert_eq!(v.retry_after, if v.remaining == 0 { v.reset } else { 0 });
                }
                let expires = now + slot_hold(&scopes).expect("every scope holds slots");
                tickets.push(Ticket { id, scopes: ids, expires, closed: false });
            }
            Op::Close { pick, cost, twice } => {
                if tickets.is_empty() {
                    continue;
                }
                let issued = tickets.len();
                let ticket = &mut tickets[pick % issued];
                // Rebuilt from the ticket as the handler does: every scope at cost 1.
                let scopes: Vec<Scope<'_>> = ticket.scopes.iter().map(|&id| scope(pool, id, 1)).collect();
                let closes = if twice { 2 } else { 1 };
                for _ in 0..closes {
                    let m = stores
                        .runtime
                        .block_on(memory.close(caller, ticket.id, ticket.expires, &scopes, cost, now))
                        .unwrap();
                    let r = stores
                        .runtime
                        .block_on(stores.redis.close(caller, ticket.id, ticket.expires, &scopes, cost, now))
                        .unwrap();
                    prop_assert_eq!(&m, &r, "closing {} at {}", ticket.id, now);
                    if ticket.closed || now >= ticket.expires {
                        prop_assert_eq!(m, Closed::Unknown, "closed already, or expired");
                        seen.double_closes += usize::from(ticket.closed);
                        continue;
                    }
                    let mut held = 0;
                    for s in &scopes {
                        let slots = model.live(s.id, now);
                        let before = slots.len();
                        slots.retain(|&(t, _)| t != ticket.id);
                        held += (before - slots.len()) as u32;
                    }
                    let Closed::Closed { released, charged } = m else { panic!("an open ticket: {m:?}") };
                    prop_assert_eq!(released, held, "the ticket's live slots");
                    seen.released += held as usize;
                    let charging = scopes.iter().map(|s| s.limits.len() - 1).sum::<usize>();
                    prop_assert_eq!(charged.len(), if cost > 0 { charging } else { 0 });
                    ticket.closed = true;
                }
            }
            Op::Wait(Ok(gap)) => now += gap,
            Op::Wait(Err((pick, miss))) => {
                let ends: Vec<Nanos> =
                    model.slots.values().flatten().map(|&(_, end)| end).filter(|&e| e > now).collect();
                if let Some(&end) = ends.get(pick % ends.len().max(1)) {
                    now = end.saturating_add_signed(miss.into()).max(now);
                }
            }
        }
        prop_assert_eq!(memory.in_flight(now), Some(model.in_flight(now)), "in flight at {}", now);
    }
    seen.ended += model.ended;
    Ok(())
}

#[test]
fn no_sequence_of_admissions_closes_and_expiries_has_more_than_max_in_flight() {
    let stores = Stores::start();
    let mut runner = TestRunner::new(Cases { cases: 128, failure_persistence: None, ..Cases::default() });
    let caller = Cell::new(0u128);
    let seen = RefCell::new(Seen::default());
    runner
        .run(&(pool(), ops()), |(pool, ops)| {
            caller.set(caller.get() + 1);
            run(&stores, Key(caller.get()), &pool, ops, &mut seen.borrow_mut())
        })
        .unwrap();
    let seen = seen.into_inner();
    let counts = (seen.refused, seen.released, seen.ended, seen.double_closes);
    assert!(
        counts.0 > 50 && counts.1 > 50 && counts.2 > 50 && counts.3 > 20,
        "refused, released, ended, closed twice: {counts:?}"
    );
}

//! What the admin API asks of the Redis store: [`Redis::peek`] and [`Redis::reset`].
//!
//! A peek reads the request's counters in one round trip (`peek.lua`, which writes nothing)
//! and answers from them as the memory store answers from its own ([`peeked`]): the same
//! check, on a scratch store, at the instant the script read them (Redis's clock, unless
//! [`Redis::with_caller_clock`]). A remembered denial (`local = true`) is what the next
//! request would meet, so it is what the peek's decision says. When Redis cannot answer,
//! `on_error` decides, as it does for a check.
//!
//! A reset deletes the counters of the request's limits (one `DEL`: the keys share their hash
//! tag), and forgets the caller in the local fallback and the local tier of denials. It fails
//! when Redis cannot be reached, whatever `on_error` says: a reset that did not happen must not
//! look as if it had.

use std::future::Future;
use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::Script;
use smallvec::SmallVec;

use super::{replayed, scopes_fingerprint, Conn, Redis};
use crate::config::OnError;
use crate::identity::Key;
use crate::limiter::{Nanos, State, SECOND};
use crate::store::memory::admin::{peeked, Copied};
use crate::store::memory::States;
use crate::store::{Counting, Mode, Peek, Scope, StoreError, Verdicts};

/// `peek.lua`, its digest computed once.
static PEEK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("peek.lua")));

/// Fields per key in `peek.lua`'s reply.
const FIELDS: usize = 5;

impl Redis {
    /// See [`crate::store::Store::peek`].
    pub async fn peek<'p>(
        &self,
        caller: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
        counting: Counting,
    ) -> Result<Peek<'p>, StoreError> {
        let peek = match self.conn.load_full() {
            Some(conn) if self.breaker.allows(now) => match self.read(&conn, caller, scopes, now).await {
                Ok((clock, copies)) => {
                    self.breaker.success();
                    let at = if self.caller_clock { now } else { clock };
                    peeked(caller, scopes, copies, at, counting)
                }
                Err(why) => {
                    tracing::debug!(error = %why, "store: redis peek failed");
                    self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.breaker.failure(now);
                    self.peek_without_redis(caller, scopes, now, counting)?
                }
            },
            _ => self.peek_without_redis(caller, scopes, now, counting)?,
        };
        Ok(self.with_remembered_denial(peek, caller, scopes, now))
    }

    /// What a check decides while Redis cannot answer: `on_error`.
    fn peek_without_redis<'p>(
        &self,
        caller: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
        counting: Counting,
    ) -> Result<Peek<'p>, StoreError> {
        if self.config.on_error == OnError::Local {
            return Ok(self.fallback.peek(caller, scopes, now, counting));
        }
        // Unchecked or unavailable, as a check decides, which looks at no scope for either.
        self.fallback(caller, &[], now, counting, 0).map(|next| Peek { now: Verdicts::new(), next })
    }

    /// `peek`, its decision replaced by the denial the local tier remembers for these scopes,
    /// if any: a check would answer with that without asking Redis.
    fn with_remembered_denial<'p>(
        &self,
        mut peek: Peek<'p>,
        caller: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
    ) -> Peek<'p> {
        // As a check: only for enforced scopes holding no slot.
        let remembers = scopes.iter().all(|s| s.mode == Mode::Enforce && !s.holds_slot());
        let Some(denials) = self.denials.as_ref().filter(|_| remembers) else {
            return peek;
        };
        if let Some(hit) = denials.get(&(caller.0, scopes_fingerprint(scopes))) {
            let (until, decided, verdicts) = &*hit;
            if now < *until {
                peek.next = replayed(verdicts, scopes, now.saturating_sub(*decided));
            }
        }
        peek
    }

    /// What Redis holds of every limit of `scopes`, and the instant it read them at (its own
    /// clock, or `now` with [`Redis::with_caller_clock`], to the microsecond).
    async fn read(
        &self,
        conn: &Conn,
        caller: Key,
        scopes: &[Scope<'_>],
        now: Nanos,
    ) -> Result<(Nanos, SmallVec<[Copied; 4]>), String> {
        let mut invocation = PEEK.prepare_invoke();
        invocation.arg(if self.caller_clock { now.to_string() } else { String::new() });
        for s in scopes {
            for l in s.limits {
                invocation.key(self.key(caller, s.id, l.id)).arg(if l.is_concurrent() { "c" } else { "" });
            }
        }
        let mut conn = conn.clone();
        let reply: Vec<i64> = self.timed(invocation.invoke_async(&mut conn)).await?;
        let unexpected = || format!("the peek script gave a reply it never gives ({} values)", reply.len());
        let mut at = 0;
        let mut take = |n: usize| {
            let values = reply.get(at..at + n).ok_or_else(unexpected)?;
            at += n;
            Ok::<_, String>(values)
        };
        let instant = |v: i64| u64::try_from(v).map_err(|_| unexpected());
        let head = take(2)?;
        let clock =
            instant(head[0])?.saturating_mul(SECOND).saturating_add(instant(head[1])?.saturating_mul(1000));
        let mut copies = SmallVec::new();
        for scope in scopes {
            let (mut states, mut slots) = (States::new(), Vec::new());
            for limit in scope.limits {
                if limit.is_concurrent() {
                    let count = usize::try_from(take(1)?[0]).map_err(|_| unexpected())?;
                    for &end in take(count)? {
                        slots.push(instant(end)?.saturating_mul(1000));
                    }
                } else {
                    states.push((limit.id, state(take(FIELDS)?)));
                }
            }
            copies.push(Copied { states: Some(states), slots });
        }
        if at != reply.len() {
            return Err(unexpected());
        }
        Ok((clock, copies))
    }

    /// See [`crate::store::Store::reset`]: the number of keys Redis deleted.
    pub async fn reset(&self, caller: Key, scopes: &[Scope<'_>], now: Nanos) -> Result<u64, StoreError> {
        let unavailable = || StoreError::Unavailable { retry_after: self.config.breaker_reattempt };
        let keys: Vec<String> =
            scopes.iter().flat_map(|s| s.limits.iter().map(move |l| self.key(caller, s.id, l.id))).collect();
        let deleted = if keys.is_empty() {
            0
        } else {
            let mut conn = self.conn.load_full().map(|c| (*c).clone()).ok_or_else(unavailable)?;
            let deleted = self.timed(redis::cmd("DEL").arg(&keys).query_async(&mut conn)).await;
            deleted.map_err(|why| {
                tracing::warn!(error = %why, "store: redis reset failed");
                unavailable()
            })?
        };
        self.fallback.reset(caller, scopes, now);
        if let Some(denials) = &self.denials {
            // Remembered denials are keyed by limit sets, not scopes: forget all of the
            // caller's. A walk over the tier, which only an operator's reset pays for.
            for (key, _) in denials.iter().filter(|(key, _)| key.0 == caller.0) {
                denials.invalidate(&*key);
            }
        }
        Ok(deleted)
    }
}

impl Redis {
    /// `call`, bounded by the command timeout; `Err` says why it gave no answer.
    async fn timed<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
        match tokio::time::timeout(self.config.command_timeout, call).await {
            Ok(reply) => reply.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.config.command_timeout)),
        }
    }
}

/// Either connection, for commands and scripts alike.
impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// One limit's state from its fields in `peek.lua`'s reply (`s, n, c, p, a`, -1 if absent), read
/// as `check.lua` reads them: instants in seconds and nanoseconds, or the older microseconds.
fn state(f: &[i64]) -> State {
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    let at = if f[0] >= 0 {
        n(f[0]).saturating_mul(SECOND).saturating_add(n(f[1]))
    } else {
        n(f[4]).saturating_mul(1000)
    };
    let count = |v: i64| u32::try_from(v).unwrap_or(if v < 0 { 0 } else { u32::MAX });
    State { at, count: count(f[2]), previous: count(f[3]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_the_check_script_reads_them() {
        assert_eq!(state(&[-1, -1, -1, -1, -1]), State::default());
        assert_eq!(
            state(&[1_700_000_060, -1, 7, 3, -1]),
            State { at: 1_700_000_060 * SECOND, count: 7, previous: 3 }
        );
        assert_eq!(state(&[1_700_000_000, 5, -1, -1, -1]).at, 1_700_000_000 * SECOND + 5);
        assert_eq!(state(&[-1, -1, 2, -1, 1_700_000_000_000_001]).at, 1_700_000_000_000_001_000);
    }
}

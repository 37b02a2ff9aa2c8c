//! The Redis store: counters shared by every replica, checked and counted for one request in one
//! round trip by a Lua script (`check.lua`, the same integer arithmetic as `limiter`, to the
//! nanosecond, with Redis's own clock unless [`Redis::with_caller_clock`]). Keys of one caller
//! share a hash tag, so Redis Cluster works too.
//!
//! When Redis cannot answer (down, slow, wrong password, cluster failing) the configured
//! `on_error` decides: `local` checks the in-memory store instead, so each replica still
//! enforces its own share; `allow` fails open; `deny` fails closed. A circuit breaker stops
//! every request from paying the command timeout while Redis is gone: after
//! `breaker_threshold` consecutive failures it opens, and `breaker_reattempt` later one request
//! tries Redis again.
//!
//! Any failure (no connection, an error, a timeout, a reply the script never gives) counts for
//! the breaker and is decided by `on_error`.
//!
//! The enforced scopes of a request are checked in one call of the script, all or nothing; each
//! dry-run scope in a call of its own (on the same multiplexed connection), so it is counted on
//! its own.
//!
//! Concurrency slots are a sorted set per (caller, scope), of ticket ids scored by when their
//! hold ends, in the caller's hash tag like the counters: the script prunes it, counts it and
//! adds the request's slot in the same call as the other limits, all or nothing for the
//! enforced scopes; every set expires with its last slot.
//!
//! With `local = true`, a denial is remembered in memory until it would end, and requests of that
//! caller with the same limits and costs (and no dry-run scope, which Redis must count each
//! time) are answered from memory meanwhile, without a round trip. That never admits more than
//! Redis would; it may deny a little longer only if the config changes meanwhile. Denials of
//! requests with a concurrency limit are never remembered: a slot may free at any moment (a
//! backend closing its ticket), and only Redis knows when.

#[path = "redis_admin.rs"]
mod admin;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Client, IntoConnectionInfo, Script, ScriptInvocation};
use smallvec::SmallVec;

use super::{Closed, Counting, Decision, Judged, Memory, Mode, Scope, StoreError, TicketId, Verdicts};
use crate::config::{OnError, RedisConfig};
use crate::identity::Key;
use crate::limiter::{Algorithm, Limit, Nanos, Verdict, SECOND};

#[path = "redis_overrides.rs"]
mod overrides;

/// Checks a request: the arithmetic of every limit, then the check itself.
const CHECK: &str = concat!(include_str!("limits.lua"), include_str!("check.lua"));
/// Closes a ticket, with the same arithmetic.
const CLOSE: &str = concat!(include_str!("limits.lua"), include_str!("close.lua"));

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// What the store can say of Redis, for `/readyz`, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not connected yet.
    Connecting,
    Up,
    /// The breaker is open: requests are decided by `on_error`.
    Down,
}

/// Consecutive failures open the breaker; `reattempt` later one request may try again.
#[derive(Debug)]
struct Breaker {
    threshold: u32,
    reattempt: Nanos,
    failures: AtomicU32,
    /// While `now < open_until`, Redis is not tried. 0: closed.
    open_until: AtomicU64,
}

impl Breaker {
    fn allows(&self, now: Nanos) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 || now < until {
            return until == 0;
        }
        // Half open: the first request past the deadline claims the trial; the rest wait for
        // its outcome with the breaker still open.
        self.open_until
            .compare_exchange(until, now + self.reattempt, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Returns true if this closed an open breaker.
    fn success(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        self.open_until.swap(0, Ordering::AcqRel) != 0
    }

    /// Returns true if this opened the breaker.
    fn failure(&self, now: Nanos) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.threshold {
            let was = self.open_until.swap(now + self.reattempt, Ordering::AcqRel);
            return was == 0;
        }
        false
    }

    fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

/// The local tier. Key: caller and the limits' fingerprint. Value: until when, when decided, the
/// verdicts of the denial (in the order of the limits the fingerprint covers).
type Denials = moka::sync::Cache<(u128, u64), Arc<(Nanos, Nanos, SmallVec<[Verdict; 4]>)>>;

/// The Redis store.
pub struct Redis {
    config: RedisConfig,
    conn: ArcSwapOption<Conn>,
    check_script: Script,
    close_script: Script,
    breaker: Breaker,
    /// `on_error = "local"`: decides while Redis cannot.
    fallback: Memory,
    /// `local = true`: callers known to be denied, until when.
    denials: Option<Denials>,
    connected: AtomicBool,
    errors: AtomicU64,
    /// Slots the script found and dropped because their hold had ended.
    slots_ended: AtomicU64,
    /// Whether the script takes `now` from the caller instead of Redis's `TIME`.
    caller_clock: bool,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("urls", &self.describe()).field("health", &self.health()).finish()
    }
}

impl Redis {
    /// A store for `config`; nothing is connected yet (see [`Redis::connect`]). `max_keys`
    /// bounds the in-memory fallback and local tier.
    pub fn new(config: RedisConfig, max_keys: u64) -> Redis {
        if config.urls.iter().any(|u| u.0.starts_with("rediss://")) {
            // rustls needs a process-wide crypto provider; a second install is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let denials = config.local.then(|| moka::sync::Cache::builder().max_capacity(max_keys).build());
        Redis {
            breaker: Breaker {
                threshold: config.breaker_threshold,
                reattempt: u64::try_from(config.breaker_reattempt.as_nanos()).unwrap_or(u64::MAX),
                failures: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
            },
            config,
            conn: ArcSwapOption::empty(),
            check_script: Script::new(CHECK),
            close_script: Script::new(CLOSE),
            fallback: Memory::new(max_keys),
            denials,
            connected: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            slots_ended: AtomicU64::new(0),
            caller_clock: false,
        }
    }

    /// A store whose script counts at the `now` each check is given, not at Redis's own clock:
    /// for one replica, or replicas whose clocks agree, and for tests that drive time.
    pub fn with_caller_clock(mut self) -> Redis {
        self.caller_clock = true;
        self
    }

    /// The URLs, passwords redacted.
    pub fn describe(&self) -> String {
        self.config.urls.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }

    pub fn health(&self) -> Health {
        if !self.connected.load(Ordering::Acquire) {
            Health::Connecting
        } else if self.breaker.is_open() {
            Health::Down
        } else {
            Health::Up
        }
    }

    /// Commands that failed or timed out since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Slots freed by their hold since start, as this replica's scripts found them in Redis
    /// (each once, by whichever replica pruned it), and as its memory fallback did.
    pub fn slots_ended(&self) -> u64 {
        self.slots_ended.load(Ordering::Relaxed) + self.fallback.slots_ended()
    }

    pub fn on_error(&self) -> OnError {
        self.config.on_error
    }

    /// Whether checks can be answered as configured: Redis is up, or `on_error` lets the
    /// service decide without it.
    pub fn is_ready(&self) -> bool {
        self.health() == Health::Up || self.config.on_error != OnError::Deny
    }

    async fn open(&self) -> Result<Conn, String> {
        let c = &self.config;
        let why = |e: redis::RedisError| e.to_string();
        if c.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(c.urls.iter().map(|u| u.0.as_str()))
                .connection_timeout(c.connect_timeout)
                .response_timeout(c.command_timeout)
                .retries(1);
            if let Some(p) = &c.password {
                builder = builder.password(p.0.clone());
            }
            let client = builder.build().map_err(why)?;
            let conn = tokio::time::timeout(c.connect_timeout * 4, client.get_async_connection())
                .await
                .map_err(|_| format!("no answer within {:?}", c.connect_timeout * 4))?
                .map_err(why)?;
            // A cluster connection is lazy about its nodes: ask one so a bad password shows now.
            let mut probe = conn.clone();
            redis::cmd("PING").query_async::<String>(&mut probe).await.map_err(why)?;
            Ok(Conn::Cluster(conn))
        } else {
            let mut info = c.urls[0].0.as_str().into_connection_info().map_err(why)?;
            if let Some(p) = &c.password {
                let settings = info.redis_settings().clone().set_password(&p.0);
                info = info.set_redis_settings(settings);
            }
            let client = Client::open(info).map_err(why)?;
            let manager_config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(c.connect_timeout))
                .set_response_timeout(Some(c.command_timeout))
                .set_number_of_retries(1)
                .set_max_delay(c.breaker_reattempt);
            let conn = ConnectionManager::new_with_config(client, manager_config).await.map_err(why)?;
            Ok(Conn::Single(conn))
        }
    }

    /// Connects, retrying until it succeeds; logs the first failure at error level and the
    /// success at info. Checks meanwhile are decided by `on_error`.
    pub async fn connect(self: Arc<Self>) {
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        loop {
            match self.open().await {
                Ok(conn) => {
                    self.conn.store(Some(Arc::new(conn)));
                    self.connected.store(true, Ordering::Release);
                    tracing::info!(redis = %self.describe(), "store: redis connected");
                    return;
                }
                Err(e) => {
                    if e != last {
                        tracing::error!(
                            redis = %self.describe(),
                            error = %e,
                            on_error = ?self.config.on_error,
                            "store: cannot connect to redis; retrying"
                        );
                        last = e;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config.breaker_reattempt.max(Duration::from_millis(100)));
                }
            }
        }
    }

    /// The key of one limit's counter: the caller's hash (never the token) as hash tag.
    fn key(&self, caller: Key, scope: u32, limit: u32) -> String {
        format!("{}{{{:032x}}}:{scope:08x}:{limit:08x}", self.config.prefix, caller.0)
    }

    /// The key of a closed ticket's marker, in its caller's hash tag.
    fn closed_key(&self, caller: Key, ticket: TicketId) -> String {
        format!("{}{{{:032x}}}:closed:{ticket:032x}", self.config.prefix, caller.0)
    }

    /// See [`super::Store::check_ticket`].
    pub async fn check<'p>(
        &self,
        caller: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
        counting: Counting,
        ticket: TicketId,
    ) -> Result<Decision<'p>, StoreError> {
        if scopes.is_empty() {
            // Nothing to ask Redis, and no answer to tell the breaker about.
            return Ok(Decision::Allowed(Verdicts::new()));
        }
        let dry_run = scopes.iter().any(|s| s.mode == Mode::DryRun);
        let local = self.denials.as_ref().filter(|_| !dry_run && !scopes.iter().any(Scope::holds_slot));
        // Only the local tier needs to tell limit sets apart.
        let fingerprint = if local.is_some() { scopes_fingerprint(scopes) } else { 0 };
        if let Some(denials) = local {
            if let Some(hit) = denials.get(&(caller.0, fingerprint)) {
                let (until, decided, verdicts) = &*hit;
                if now < *until {
                    return Ok(replayed(verdicts, scopes, now.saturating_sub(*decided)));
                }
                denials.invalidate(&(caller.0, fingerprint));
            }
        }
        let Some(conn) = self.conn.load_full().filter(|_| self.breaker.allows(now)) else {
            return self.fallback(caller, scopes, now, counting, ticket);
        };
        let mut verdicts = Verdicts::new();
        let enforced = || scopes.iter().filter(|s| s.mode == Mode::Enforce);
        let request = (caller, now, counting, ticket);
        if enforced().next().is_some() {
            if let Err(why) = self.call(&conn, request, enforced(), &mut verdicts).await {
                self.failed(&why, now);
                return self.fallback(caller, scopes, now, counting, ticket);
            }
        }
        for scope in scopes.iter().filter(|s| s.mode == Mode::DryRun) {
            if let Err(why) = self.call(&conn, request, std::iter::once(scope), &mut verdicts).await {
                self.failed(&why, now);
                return self.fallback(caller, scopes, now, counting, ticket);
            }
        }
        self.succeeded();
        if dry_run {
            verdicts = in_scope_order(verdicts, scopes);
        }
        let decision = Decision::of(verdicts);
        if let (Some(denials), Decision::Denied(verdicts)) = (local, &decision) {
            if counting == Counting::AllowedOnly {
                // Remembered until the first instant Redis could admit the caller again, which
                // for a bucket that lets requests wait is `max_delay` before its next token.
                let wait = verdicts
                    .iter()
                    .filter(|j| !j.verdict.allowed)
                    .map(|j| j.verdict.retry_after.saturating_sub(j.limit.max_delay()))
                    .max()
                    .filter(|&w| w > 0);
                if let Some(wait) = wait {
                    let kept = verdicts.iter().map(|j| j.verdict).collect();
                    denials.insert((caller.0, fingerprint), Arc::new((now + wait, now, kept)));
                }
            }
        }
        Ok(decision)
    }

    /// One call of the check script for `group`, whose scopes are checked and counted all or
    /// nothing, for a request of (caller, now, counting, ticket); their verdicts are appended to
    /// `out`. `Err` says why Redis gave no usable answer.
    async fn call<'a, 'p: 'a>(
        &self,
        conn: &Conn,
        (caller, now, counting, ticket): (Key, Nanos, Counting, TicketId),
        group: impl Iterator<Item = &'a Scope<'p>> + Clone,
        out: &mut Verdicts<'p>,
    ) -> Result<(), String> {
        let mut invocation = self.invocation(&self.check_script, now, ticket);
        invocation.arg(if counting == Counting::Everything { "1" } else { "0" });
        for s in group.clone() {
            for l in s.limits {
                invocation.key(self.key(caller, s.id, l.id));
                limit_args(&mut invocation, l, l.weight(s.cost));
            }
        }
        let reply = self.run(conn, &invocation).await?;
        parse(&reply, group, out)
            .ok_or_else(|| format!("the script gave a reply it never gives ({} values)", reply.len()))?;
        self.slots_ended.fetch_add(reply[1].unsigned_abs(), Ordering::Relaxed);
        Ok(())
    }

    /// See [`super::Store::close`]. Redis decides whether the ticket has expired, on the clock
    /// the checks use. While Redis cannot answer, `on_error = "local"` closes it in the memory
    /// fallback (which knows only the slots and counts it holds itself); `allow` and `deny`
    /// have nothing to close it in: the store is unavailable.
    pub async fn close<'p>(
        &self,
        caller: Key,
        ticket: TicketId,
        expires: Nanos,
        scopes: &[Scope<'p>],
        cost: u32,
        now: Nanos,
    ) -> Result<Closed<'p>, StoreError> {
        if let Some(conn) = self.conn.load_full().filter(|_| self.breaker.allows(now)) {
            let mut invocation = self.invocation(&self.close_script, now, ticket);
            invocation.arg(expires).arg(cost).key(self.closed_key(caller, ticket));
            for s in scopes {
                for l in s.limits.iter().filter(|l| l.is_concurrent() || (cost > 0 && l.counts_cost())) {
                    invocation.key(self.key(caller, s.id, l.id));
                    limit_args(&mut invocation, l, if l.is_concurrent() { 1 } else { cost });
                }
            }
            let reply = self.run(&conn, &invocation).await.and_then(|reply| {
                parse_closed(&reply, scopes, cost).ok_or_else(|| {
                    format!("the close script gave a reply it never gives ({} values)", reply.len())
                })
            });
            match reply {
                Ok((closed, ended)) => {
                    self.succeeded();
                    self.slots_ended.fetch_add(ended, Ordering::Relaxed);
                    return Ok(closed);
                }
                Err(why) => self.failed(&why, now),
            }
        }
        match self.config.on_error {
            OnError::Local => Ok(self.fallback.close(caller, ticket, expires, scopes, cost, now)),
            OnError::Allow | OnError::Deny => {
                Err(StoreError::Unavailable { retry_after: self.config.breaker_reattempt })
            }
        }
    }

    /// An invocation of `script` with the arguments every script starts with (limits.lua):
    /// `now` (empty for Redis's own clock), and `ticket`.
    fn invocation<'s>(&self, script: &'s Script, now: Nanos, ticket: TicketId) -> ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        if self.caller_clock {
            invocation.arg(now);
        } else {
            invocation.arg("");
        }
        invocation.arg(format!("{ticket:032x}"));
        invocation
    }

    /// Runs `invocation` within the command timeout. `Err` says why it gave no reply.
    async fn run(&self, conn: &Conn, invocation: &ScriptInvocation<'_>) -> Result<Vec<i64>, String> {
        let mut conn = conn.clone();
        let call = async {
            match &mut conn {
                Conn::Single(c) => invocation.invoke_async::<Vec<i64>>(c).await,
                Conn::Cluster(c) => invocation.invoke_async::<Vec<i64>>(c).await,
            }
        };
        match tokio::time::timeout(self.config.command_timeout, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.config.command_timeout)),
        }
    }

    /// Closes the breaker if it was open, with a log line saying so.
    fn succeeded(&self) {
        if self.breaker.success() {
            tracing::info!(redis = %self.describe(), "store: redis answers again; breaker closed");
        }
    }

    /// Counts a failed command (`why`) for the breaker and the error count; the caller then
    /// decides by `on_error`.
    fn failed(&self, why: &str, now: Nanos) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.breaker.failure(now) {
            tracing::warn!(
                redis = %self.describe(),
                error = %why,
                reattempt = ?self.config.breaker_reattempt,
                on_error = ?self.config.on_error,
                "store: redis failing; breaker open"
            );
        } else {
            tracing::debug!(error = %why, "store: redis command failed");
        }
    }

    /// The decision `on_error` gives while Redis cannot.
    fn fallback<'p>(
        &self,
        caller: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
        counting: Counting,
        ticket: TicketId,
    ) -> Result<Decision<'p>, StoreError> {
        match self.config.on_error {
            OnError::Local => Ok(self.fallback.check_ticket(caller, scopes, now, counting, ticket)),
            OnError::Allow => Ok(Decision::Unchecked),
            OnError::Deny => Err(StoreError::Unavailable { retry_after: self.config.breaker_reattempt }),
        }
    }
}

/// Identifies the set of limits a decision was made for, and what the request cost in each,
/// so a remembered denial is only reused for requests with the same limits and costs.
fn scopes_fingerprint(scopes: &[Scope<'_>]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for s in scopes {
        for x in [s.id, s.cost]
            .into_iter()
            .chain(s.limits.iter().map(|l| l.id))
            .chain(s.limits.iter().map(|l| l.quota()))
        {
            h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A remembered denial, `elapsed` nanoseconds later, for `scopes` (the enforced scopes the
/// denial's fingerprint covers): waits shortened by the time passed.
fn replayed<'p>(verdicts: &[Verdict], scopes: &[Scope<'p>], elapsed: Nanos) -> Decision<'p> {
    let limits = scopes.iter().flat_map(|s| s.limits.iter().map(move |l| (s, l)));
    let judged = limits.zip(verdicts).map(|((scope, limit), v)| {
        let mut verdict = *v;
        verdict.reset = verdict.reset.saturating_sub(elapsed);
        if !verdict.allowed {
            verdict.retry_after = verdict.retry_after.saturating_sub(elapsed).max(1);
        }
        Judged { limit, rule: scope.rule, mode: scope.mode, verdict }
    });
    Decision::Denied(judged.collect())
}

/// `verdicts` (the enforced scopes' first, then each dry-run scope's, as the calls were made)
/// put back in the order of `scopes`, as every store gives them.
fn in_scope_order<'p>(verdicts: Verdicts<'p>, scopes: &[Scope<'p>]) -> Verdicts<'p> {
    let enforced: usize = scopes.iter().filter(|s| s.mode == Mode::Enforce).map(|s| s.limits.len()).sum();
    let (mut e, mut d) = (0, enforced);
    let mut ordered = Verdicts::new();
    for s in scopes {
        let at = if s.mode == Mode::Enforce { &mut e } else { &mut d };
        ordered.extend_from_slice(&verdicts[*at..*at + s.limits.len()]);
        *at += s.limits.len();
    }
    ordered
}

/// A limit's five arguments for the scripts (see limits.lua), for a request of `weight`.
fn limit_args(invocation: &mut ScriptInvocation<'_>, limit: &Limit, weight: u32) {
    let (kind, quota, a, b) = match limit.algorithm {
        Algorithm::Fixed { requests, window } | Algorithm::Sliding { requests, window } => {
            let (len, off) = window.alignment().unwrap_or((0, 0));
            let kind = if matches!(limit.algorithm, Algorithm::Fixed { .. }) { "f" } else { "s" };
            (kind, requests.get(), len / SECOND, off / SECOND)
        }
        Algorithm::Gcra { emission, burst, max_delay } => ("g", burst.get(), emission.max(1), max_delay),
        Algorithm::Concurrent { max, hold } => ("c", max.get(), hold, 0),
    };
    invocation.arg(kind).arg(quota).arg(a).arg(b).arg(weight);
}

/// Reads the check script's reply for `group` into `out`; `None` if it is not a reply the
/// script gives.
fn parse<'a, 'p: 'a>(
    reply: &[i64],
    group: impl Iterator<Item = &'a Scope<'p>> + Clone,
    out: &mut Verdicts<'p>,
) -> Option<()> {
    let n: usize = group.clone().map(|s| s.limits.len()).sum();
    if reply.len() != 2 + 6 * n || !matches!(reply[0], 0 | 1) || reply[1] < 0 {
        return None;
    }
    let all = reply[0] == 1;
    let mut fields = reply[2..].chunks_exact(6);
    let mut every = true;
    for s in group {
        for limit in s.limits {
            let verdict = verdict(fields.next()?, limit)?;
            every &= verdict.allowed;
            out.push(Judged { limit, rule: s.rule, mode: s.mode, verdict });
        }
    }
    (every == all).then_some(())
}

/// Reads the close script's reply for `scopes` and `cost`: what closing did, and how many
/// slots the call found ended. `None` if it is not a reply the script gives.
fn parse_closed<'p>(reply: &[i64], scopes: &[Scope<'p>], cost: u32) -> Option<(Closed<'p>, u64)> {
    let charged = scopes.iter().flat_map(|s| s.limits.iter().map(move |l| (s, l)));
    let charged: Vec<_> = charged.filter(|(_, l)| cost > 0 && l.counts_cost()).collect();
    match reply {
        [0] => Some((Closed::Unknown, 0)),
        [1, released, ended, fields @ ..] if fields.len() == 6 * charged.len() => {
            let charged = charged
                .into_iter()
                .zip(fields.chunks_exact(6))
                .map(|((s, limit), f)| {
                    Some(Judged { limit, rule: s.rule, mode: s.mode, verdict: verdict(f, limit)? })
                })
                .collect::<Option<Vec<_>>>()?;
            let released = u32::try_from(*released).ok()?;
            Some((Closed::Closed { released, charged }, u64::try_from(*ended).ok()?))
        }
        _ => None,
    }
}

/// One limit's verdict from its six fields in a script's reply; `None` if they are not fields
/// the scripts give.
fn verdict(f: &[i64], limit: &Limit) -> Option<Verdict> {
    let nanos = |v: i64| u64::try_from(v).ok();
    Some(Verdict {
        allowed: f[0] == 1,
        quota: limit.quota(),
        remaining: u32::try_from(f[1]).ok()?,
        reset: nanos(f[2])?,
        retry_after: nanos(f[3])?,
        window: nanos(f[4])?,
        wait: nanos(f[5])?,
    })
}

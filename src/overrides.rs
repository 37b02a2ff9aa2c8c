//! Per-customer overrides, set at runtime through the admin API (`PUT /v1/overrides`): for
//! one API token, a plan that replaces the one the config gives it and/or limits that replace
//! its plan's own limits, until an optional expiry. A check applies its caller's override right
//! after the plan is known ([`Overrides::get`]); rules still apply by the (overridden) plan. The
//! set lives beside the config in the server's state, not in it, so a reload keeps it.
//!
//! Persistence follows the store. With Redis, a change is written to a Redis hash first (see
//! `store::Redis::override_set`) and every replica polls the hash's version every 250 ms
//! ([`follow`]), reloading the hash when it moved: a change applies on every replica within a
//! second, and the overrides survive restarts. With the memory store they are written into the
//! snapshot beside the counters ([`Overrides::records`], [`Overrides::restore`]) when one is
//! configured, and lost at restart otherwise.
//!
//! An override is stored as JSON ([`Override::json`]): its plan by name and its limits as
//! given, so what is read back (from Redis or a snapshot) is validated again by the config's
//! own code; one that no longer validates is skipped, with a warning. An override whose plan a
//! reload removed applies its limits only.
//!
//! Expired overrides never apply and are dropped lazily: from listings at once, from the set
//! (and Redis) when room is needed or the set is read back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustc_hash::FxBuildHasher;
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::config::{override_limits, Problem};
use crate::identity::Key;
use crate::limiter::{Limit, Nanos};
use crate::policy::{PlanId, Policy};
use crate::store::snapshot::Record;
use crate::store::{Health, Redis};

/// How often replicas on Redis ask whether the overrides changed.
pub const POLL: Duration = Duration::from_millis(250);

/// One token's override.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// The plan that replaces the token's, by name.
    pub plan: Option<Arc<str>>,
    /// The limits that replace the plan's own limits, validated.
    pub limits: Option<Vec<Limit>>,
    /// The limits as given, for answers and to store.
    limits_given: Option<serde_json::Value>,
    /// When it was set (nanoseconds since the epoch).
    pub set_at: Nanos,
    /// From this instant on it no longer applies.
    pub expires_at: Option<Nanos>,
    /// How it is stored ([`Override::json`]), as read back or as made.
    stored: Box<str>,
}

impl Override {
    /// An override of `plan` (a name the caller has checked) and/or `limits` (a JSON array of
    /// limits in a plan's syntax, validated here), set at `set_at`. Problems name their field.
    pub fn new(
        plan: Option<String>,
        limits: Option<serde_json::Value>,
        set_at: Nanos,
        expires_at: Option<Nanos>,
    ) -> Result<Override, Vec<Problem>> {
        if plan.is_none() && limits.is_none() {
            let message = "give plan, limits or both".to_owned();
            return Err(vec![Problem { key: "plan".into(), message }]);
        }
        let validated = limits.as_ref().map(override_limits).transpose()?;
        let mut ov = Override {
            plan: plan.map(Arc::from),
            limits: validated,
            limits_given: limits,
            set_at,
            expires_at,
            stored: Box::from(""),
        };
        ov.stored = ov.json().to_string().into_boxed_str();
        Ok(ov)
    }

    /// Reads an override back from its stored JSON, validating it again.
    pub fn from_stored(bytes: &[u8]) -> Result<Override, String> {
        #[derive(Deserialize)]
        struct Stored {
            plan: Option<String>,
            limits: Option<serde_json::Value>,
            set_at: String,
            expires_at: Option<String>,
        }
        let s: Stored = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let set_at = parse_time(&s.set_at).map_err(|e| format!("set_at: {e}"))?;
        let expires_at =
            s.expires_at.as_deref().map(parse_time).transpose().map_err(|e| format!("expires_at: {e}"))?;
        let mut ov = Override::new(s.plan, s.limits, set_at, expires_at)
            .map_err(|problems| problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; "))?;
        ov.stored = String::from_utf8_lossy(bytes).into();
        Ok(ov)
    }

    /// `{"plan", "limits", "set_at", "expires_at"}`, times in RFC 3339 (UTC), absent ones null:
    /// how an override is stored and answered.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "plan": self.plan.as_deref(),
            "limits": self.limits_given,
            "set_at": format_time(self.set_at),
            "expires_at": self.expires_at.map(format_time),
        })
    }

    /// Whether it applies at `now`: it has not expired.
    pub fn applies(&self, now: Nanos) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }

    /// Its plan in `policy`: `None` if it sets none, or names one that `policy` lacks (a reload
    /// removed it).
    pub fn plan_in(&self, policy: &Policy) -> Option<PlanId> {
        self.plan.as_deref().and_then(|name| policy.plan_named(name))
    }
}

/// RFC 3339 in UTC, with as many fractional digits as needed.
pub fn format_time(nanos: Nanos) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| nanos.to_string())
}

/// Reads an RFC 3339 date and time (`2026-12-31T23:59:59Z`, any offset) as nanoseconds since
/// the epoch; the message says what is wrong.
pub fn parse_time(text: &str) -> Result<Nanos, String> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("not an RFC 3339 date and time ({e}; e.g. \"2026-12-31T23:59:59Z\")"))?;
    Nanos::try_from(t.unix_timestamp_nanos()).map_err(|_| "must be after 1970".to_owned())
}

/// Why a change to the overrides was not made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverridesError {
    #[error("at most {max} overrides are kept (admin.max_overrides)")]
    Full { max: usize },
    /// Redis did not take the change; nothing changed.
    #[error("the store cannot keep the change now: {0}")]
    Unavailable(String),
}

type Map = HashMap<Key, Arc<Override>, FxBuildHasher>;

/// The overrides of one service, by token key.
#[derive(Debug)]
pub struct Overrides {
    /// Written only by changes and reloads, rarely; read by every check of a service that has
    /// overrides, for a lookup and an `Arc` clone. A lock rather than a copy-on-write map,
    /// so that a change costs one insert however many overrides there are.
    map: RwLock<Map>,
    /// How many overrides `map` holds, read by checks without the lock: none is the common case.
    len: AtomicUsize,
    /// Changes made here, so that a reload from Redis read before one of them is not installed
    /// over it.
    changes: AtomicU64,
    /// Where changes are written first, when the store is Redis.
    redis: Option<Arc<Redis>>,
}

/// A key as a Redis field and in answers: 32 hex digits.
pub fn key_hex(key: Key) -> String {
    format!("{:032x}", key.0)
}

/// The key of [`key_hex`]'s form.
pub fn parse_key(hex: &str) -> Option<Key> {
    let digits = hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    digits.then(|| u128::from_str_radix(hex, 16).ok().map(Key)).flatten()
}

impl Overrides {
    /// An empty set; changes go to `redis` first when given.
    pub fn new(redis: Option<Arc<Redis>>) -> Overrides {
        Overrides { map: RwLock::default(), len: AtomicUsize::new(0), changes: AtomicU64::new(0), redis }
    }

    /// The override of `key` that applies at `now`, if any. On every check's path.
    pub fn get(&self, key: Key, now: Nanos) -> Option<Arc<Override>> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let found = self.map.read().get(&key).cloned()?;
        found.applies(now).then_some(found)
    }

    /// How many overrides are held, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets the override of `key`, replacing any; a new one is refused when `max` are held
    /// (expired ones are dropped first to make room). With Redis it is written there first.
    pub async fn put(
        &self,
        key: Key,
        ov: Override,
        max: usize,
        now: Nanos,
    ) -> Result<Arc<Override>, OverridesError> {
        let ov = Arc::new(ov);
        for attempt in 0..2 {
            let stored = match &self.redis {
                Some(redis) => {
                    let room = redis
                        .override_set(&key_hex(key), &ov.stored, max)
                        .await
                        .map_err(OverridesError::Unavailable)?;
                    if room {
                        self.change(|map| map.insert(key, ov.clone()));
                    }
                    room
                }
                None => self.change(|map| {
                    let room = map.len() < max || map.contains_key(&key);
                    if room {
                        map.insert(key, ov.clone());
                    }
                    room
                }),
            };
            if stored {
                return Ok(ov);
            }
            if attempt == 0 {
                self.purge(now).await;
            }
        }
        Err(OverridesError::Full { max })
    }

    /// Removes the override of `key`, applying or expired; whether there was one. With Redis it
    /// is removed there first (and nothing changes here if that fails).
    pub async fn remove(&self, key: Key) -> Result<bool, OverridesError> {
        // Redis knows best: the override may have been set on another replica and not be read
        // here yet.
        let in_redis = match &self.redis {
            Some(redis) => {
                Some(redis.override_delete(&key_hex(key), None).await.map_err(OverridesError::Unavailable)?)
            }
            None => None,
        };
        let here = self.change(|map| map.remove(&key)).is_some();
        Ok(in_redis.unwrap_or(here))
    }

    /// Makes a change to the map here, counted so that a reload read before it is not
    /// installed over it.
    fn change<T>(&self, f: impl FnOnce(&mut Map) -> T) -> T {
        let mut map = self.map.write();
        let out = f(&mut map);
        self.len.store(map.len(), Ordering::Release);
        self.changes.fetch_add(1, Ordering::AcqRel);
        out
    }

    /// Drops the overrides expired at `now`, from Redis too (each only if it is still the
    /// one seen here, so a newer one set meanwhile stays).
    async fn purge(&self, now: Nanos) {
        let expired: Vec<(Key, Arc<Override>)> =
            self.map.read().iter().filter(|(_, o)| !o.applies(now)).map(|(k, o)| (*k, o.clone())).collect();
        for (key, ov) in expired {
            if let Some(redis) = &self.redis {
                if let Err(e) = redis.override_delete(&key_hex(key), Some(ov.stored.as_bytes())).await {
                    tracing::debug!(error = %e, "overrides: cannot drop an expired override from redis");
                    continue;
                }
            }
            self.change(|map| {
                if map.get(&key).is_some_and(|o| Arc::ptr_eq(o, &ov)) {
                    map.remove(&key);
                }
            });
        }
    }

    /// Up to `limit` overrides that apply at `now`, by key, after `after`; and whether more
    /// follow.
    pub fn list(&self, after: Option<Key>, limit: usize, now: Nanos) -> (Vec<(Key, Arc<Override>)>, bool) {
        let mut page: Vec<(Key, Arc<Override>)> = self
            .map
            .read()
            .iter()
            .filter(|(k, o)| after.is_none_or(|a| **k > a) && o.applies(now))
            .map(|(k, o)| (*k, o.clone()))
            .collect();
        let more = page.len() > limit;
        if more {
            page.select_nth_unstable_by_key(limit, |(k, _)| *k);
            page.truncate(limit);
        }
        page.sort_unstable_by_key(|(k, _)| *k);
        (page, more)
    }

    /// The overrides that apply at `now`, as the snapshot keeps them.
    pub fn records(&self, now: Nanos) -> Vec<Record> {
        let map = self.map.read();
        let live = map.iter().filter(|(_, o)| o.applies(now));
        live.map(|(k, o)| Record { caller: k.0, value: o.stored.as_bytes().to_vec() }).collect()
    }

    /// Replaces the set with `records` (from a snapshot) that apply at `now`; returns how many
    /// were taken. One that does not validate is skipped with a warning.
    pub fn restore(&self, records: Vec<Record>, now: Nanos) -> usize {
        let (map, _) = read_back(records.into_iter().map(|r| (Key(r.caller), r.value)), now);
        let n = map.len();
        self.change(|m| *m = map);
        n
    }

    /// Replaces the set with `map`, read from Redis after `changes` changes here, unless more
    /// were made since (the next poll reads again). Whether it was installed.
    fn install(&self, map: Map, changes: u64) -> bool {
        let mut current = self.map.write();
        if self.changes.load(Ordering::Acquire) != changes {
            return false;
        }
        *current = map;
        self.len.store(current.len(), Ordering::Release);
        true
    }
}

/// The overrides of `stored` (key, JSON) that validate and apply at `now`, and those that
/// validate but expired.
fn read_back(stored: impl Iterator<Item = (Key, Vec<u8>)>, now: Nanos) -> (Map, Vec<(Key, Vec<u8>)>) {
    let mut map = Map::default();
    let mut expired = Vec::new();
    for (key, bytes) in stored {
        match Override::from_stored(&bytes) {
            Ok(ov) if ov.applies(now) => {
                map.insert(key, Arc::new(ov));
            }
            Ok(_) => expired.push((key, bytes)),
            Err(e) => tracing::warn!(
                fingerprint = %key.fingerprint(),
                error = %e,
                "overrides: a stored override is not valid (skipped)"
            ),
        }
    }
    (map, expired)
}

/// Keeps `overrides` in step with Redis for as long as the service runs: every [`POLL`] it
/// asks for the version and, when it moved (or was never read), reloads the whole hash; so
/// the overrides are loaded at start as soon as Redis answers, and a change made on any
/// replica applies here within a second. Expired overrides found on a reload are deleted
/// from Redis (which moves the version: the next poll reads the hash without them). A failure
/// is logged once (at warn) until Redis answers again.
pub async fn follow(overrides: Arc<Overrides>, clock: Clock) {
    let Some(redis) = overrides.redis.clone() else { return };
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<String> = None;
    let mut failing = false;
    loop {
        ticker.tick().await;
        if redis.health() == Health::Connecting {
            // The store logs its own connection errors.
            continue;
        }
        let changes = overrides.changes.load(Ordering::Acquire);
        let loaded = async {
            let version = redis.overrides_version().await?;
            if seen.as_ref() == Some(&version) {
                return Ok(None);
            }
            redis.overrides_load().await.map(Some)
        };
        let (version, fields) = match loaded.await {
            Ok(loaded) => {
                if failing {
                    tracing::info!("overrides: redis answers again");
                    failing = false;
                }
                match loaded {
                    Some(loaded) => loaded,
                    None => continue,
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "overrides: cannot read them from redis; the last ones read stay in force");
                    failing = true;
                }
                continue;
            }
        };
        let stored = fields.into_iter().filter_map(|(field, value)| match parse_key(&field) {
            Some(key) => Some((key, value)),
            None => {
                tracing::warn!(%field, "overrides: a field of the overrides hash is not a key (skipped)");
                None
            }
        });
        let (map, expired) = read_back(stored, clock.now());
        let applying = map.len();
        if !overrides.install(map, changes) {
            continue;
        }
        tracing::debug!(%version, applying, "overrides: loaded from redis");
        seen = Some(version);
        for (key, value) in expired {
            // Only if it still holds what was read: one set again meanwhile stays.
            if let Err(e) = redis.override_delete(&key_hex(key), Some(&value)).await {
                tracing::debug!(error = %e, "overrides: cannot drop an expired override from redis");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::SECOND;

    /// 2026-12-02T00:00:00Z.
    const NOW: Nanos = 1_796_169_600 * SECOND;

    fn pro(expires_at: Option<Nanos>) -> Override {
        Override::new(Some("pro".into()), None, NOW, expires_at).unwrap()
    }

    #[test]
    fn times_read_and_print_as_rfc_3339() {
        assert_eq!(format_time(NOW), "2026-12-02T00:00:00Z");
        assert_eq!(format_time(NOW + 1_500_000), "2026-12-02T00:00:00.0015Z");
        assert_eq!(parse_time("2026-12-02T01:00:00+01:00"), Ok(NOW));
        assert_eq!(parse_time(&format_time(NOW + 7)), Ok(NOW + 7));
        assert!(parse_time("2026-12-02").unwrap_err().starts_with("not an RFC 3339 date and time"));
        assert_eq!(parse_time("1969-12-31T23:59:59Z").unwrap_err(), "must be after 1970");
    }

    #[test]
    fn an_override_reads_back_as_it_was_stored() {
        let limits = json!([{"requests": 5, "per": "minute"}]);
        let ov = Override::new(Some("pro".into()), Some(limits.clone()), NOW, Some(NOW + SECOND)).unwrap();
        assert_eq!(
            ov.json(),
            json!({"plan": "pro", "limits": limits, "set_at": "2026-12-02T00:00:00Z", "expires_at": "2026-12-02T00:00:01Z"})
        );
        let back = Override::from_stored(ov.stored.as_bytes()).unwrap();
        assert_eq!(back, ov);
        assert_eq!(back.limits.as_ref().unwrap()[0].name.as_ref(), "minute");

        let problems = Override::new(None, None, NOW, None).unwrap_err();
        assert_eq!(problems[0].to_string(), "plan: give plan, limits or both");
        let e = Override::from_stored(
            br#"{"limits": [{"requests": 0, "per": "day"}], "set_at": "2026-12-02T00:00:00Z"}"#,
        )
        .unwrap_err();
        assert_eq!(e, "limits[0].requests: must be greater than 0 (got 0)");
        assert!(Override::from_stored(b"{").is_err());
    }

    #[tokio::test]
    async fn an_override_applies_until_it_expires() {
        let set = Overrides::new(None);
        assert!(set.get(Key(1), NOW).is_none());
        set.put(Key(1), pro(Some(NOW + SECOND)), 10, NOW).await.unwrap();
        assert_eq!(set.get(Key(1), NOW + SECOND - 1).unwrap().plan.as_deref(), Some("pro"));
        assert!(set.get(Key(1), NOW + SECOND).is_none(), "expired at expires_at");
        assert!(set.get(Key(2), NOW).is_none());
        assert!(set.list(None, 10, NOW + SECOND).0.is_empty(), "expired ones are not listed");
        assert_eq!(set.len(), 1, "dropped lazily");
    }

    #[tokio::test]
    async fn a_full_set_drops_expired_overrides_before_it_refuses_one() {
        let set = Overrides::new(None);
        set.put(Key(1), pro(Some(NOW + SECOND)), 2, NOW).await.unwrap();
        set.put(Key(2), pro(None), 2, NOW).await.unwrap();
        assert_eq!(set.put(Key(3), pro(None), 2, NOW).await, Err(OverridesError::Full { max: 2 }));
        set.put(Key(2), pro(Some(NOW + 5 * SECOND)), 2, NOW).await.expect("a replacement takes no room");
        set.put(Key(3), pro(None), 2, NOW + SECOND).await.expect("key 1 expired, making room");
        assert_eq!(set.len(), 2);
        assert!(!set.remove(Key(1)).await.unwrap());
        assert!(set.remove(Key(3)).await.unwrap());
        assert!(set.get(Key(3), NOW).is_none());
    }

    #[tokio::test]
    async fn listing_pages_through_every_override_once_in_key_order() {
        let set = Overrides::new(None);
        for k in [9u128, 3, 7, 1, 5, 8, 2] {
            set.put(Key(k << 100), pro(None), 100, NOW).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (page, more) = set.list(after, 3, NOW);
            assert!(page.len() <= 3);
            seen.extend(page.iter().map(|(k, _)| k.0 >> 100));
            after = page.last().map(|(k, _)| *k);
            if !more {
                break;
            }
        }
        assert_eq!(seen, [1, 2, 3, 5, 7, 8, 9]);
    }

    #[tokio::test]
    async fn records_restore_what_applies_and_skip_what_does_not() {
        let set = Overrides::new(None);
        set.put(Key(1), pro(None), 10, NOW).await.unwrap();
        set.put(Key(2), pro(Some(NOW + SECOND)), 10, NOW).await.unwrap();
        let mut records = set.records(NOW);
        assert_eq!(records.len(), 2);
        records.push(Record { caller: 3, value: b"not json".to_vec() });
        let after = Overrides::new(None);
        assert_eq!(after.restore(records, NOW + SECOND), 1, "expired and broken ones are skipped");
        assert_eq!(*after.get(Key(1), NOW).unwrap(), pro(None));
    }

    #[test]
    fn keys_print_as_32_hex_digits_and_read_back() {
        let key = Key(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(key_hex(key), "0123456789abcdef0011223344556677");
        assert_eq!(parse_key(&key_hex(key)), Some(key));
        assert_eq!(parse_key("0123"), None);
        assert_eq!(parse_key("0123456789abcdef001122334455667g"), None);
        assert_eq!(parse_key("+123456789abcdef0011223344556677"), None);
    }
}

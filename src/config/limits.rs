//! A list of limits (in a plan, or in a rule for one plan): each is a window
//! (`{ requests, per }`, fixed or sliding), a bucket (`{ average, period, burst }`, GCRA,
//! as in Traefik's rateLimit middleware) or a concurrency limit (`{ concurrent, hold }`: at
//! most that many requests in flight, each slot held until its ticket is closed or `hold`
//! passes). Windows and buckets take a request's cost from their quota, or one per request
//! (`counts`).

use std::num::NonZeroU32;

use super::leaf::{quoted, valid_name, Per, NAME_RULE};
use super::raw::RawLimit;
use super::validate::Validator;
use crate::limiter::{Algorithm, Counts, Limit, Nanos, MAX_DELAY, MAX_SPAN, SECOND};

/// The shapes a limit takes, for the problems of one that takes none or several.
const SHAPES: &str = "a limit is { requests, per } (with algorithm = \"fixed\" or \"sliding\"), \
    { average, period, burst } or { concurrent, hold }";

impl Validator {
    /// Validates a list of limits; `rule` prefixes default names (`summarize.minute`).
    pub(super) fn limits(&mut self, key: &str, raw: &[RawLimit], rule: Option<&str>) -> Vec<Limit> {
        let mut out: Vec<Limit> = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let lkey = format!("{key}[{i}]");
            let shape = Shape::of(l);
            if l.average == Some(0) && !shape.windowed && !shape.concurrent {
                // Traefik's `average = 0`: no limit. Its other keys are still checked.
                self.duration(format!("{lkey}.period"), l.period.as_deref().unwrap_or("1s"));
                if let Some(b) = l.burst {
                    self.count(format!("{lkey}.burst"), b);
                }
                if let Some(d) = &l.max_delay {
                    self.max_delay(&lkey, d);
                }
                self.counts(&lkey, l);
                self.unlimited.push(lkey);
                continue;
            }
            let Some(limit) = self.limit(&lkey, l, shape, rule) else { continue };
            if let Some(other) = out.iter().find(|o| o.is_concurrent() && limit.is_concurrent()) {
                let msg = format!(
                    "is a second concurrency limit in this list, beside {} (a list holds at most one)",
                    quoted(&other.name)
                );
                self.problem(&lkey, msg);
            } else if let Some(other) = out.iter().find(|o| o.id == limit.id) {
                let msg =
                    format!("has the same window as limit {} in this list (merge them)", quoted(&other.name));
                self.problem(&lkey, msg);
            } else if out.iter().any(|o| o.name == limit.name) {
                let msg = format!("{} is used by another limit in this list", quoted(&limit.name));
                self.problem(format!("{lkey}.name"), msg);
            } else {
                if limit.is_concurrent() {
                    self.concurrent.push(lkey);
                }
                out.push(limit);
            }
        }
        if out.len() > 32 {
            self.problem(key, format!("too many limits ({}, at most 32)", out.len()));
        }
        out
    }

    fn limit(&mut self, key: &str, raw: &RawLimit, shape: Shape, rule: Option<&str>) -> Option<Limit> {
        let kinds: Vec<&str> =
            [(shape.windowed, "window"), (shape.bucket, "bucket"), (shape.concurrent, "concurrency")]
                .into_iter()
                .filter_map(|(present, kind)| present.then_some(kind))
                .collect();
        // Checked first, so that a bad `counts` is reported beside the other keys' problems.
        let counts = if shape.concurrent { Some(Counts::Cost) } else { self.counts(key, raw) };
        let algorithm = match kinds.as_slice() {
            [] => {
                self.problem(key, format!("is empty ({SHAPES})"));
                return None;
            }
            ["window"] => self.windowed(key, raw)?,
            ["bucket"] => self.bucket(key, raw)?,
            ["concurrency"] => self.concurrency(key, raw)?,
            [a, b] => {
                self.problem(key, format!("mixes {a} keys and {b} keys ({SHAPES})"));
                return None;
            }
            _ => {
                self.problem(key, format!("mixes window, bucket and concurrency keys ({SHAPES})"));
                return None;
            }
        };
        let default_name = match algorithm {
            Algorithm::Fixed { window, .. } | Algorithm::Sliding { window, .. } => window.name(),
            Algorithm::Gcra { .. } => "bucket".to_owned(),
            Algorithm::Concurrent { .. } => "concurrent".to_owned(),
        };
        let name = match &raw.name {
            Some(n) if valid_name(n) => n.clone(),
            Some(n) => {
                self.problem(
                    format!("{key}.name"),
                    format!("invalid limit name {} ({NAME_RULE})", quoted(n)),
                );
                return None;
            }
            None => match rule {
                Some(r) => format!("{r}.{default_name}"),
                None => default_name,
            },
        };
        let limit = Limit::new(name, algorithm).counting(counts?);
        // The Redis script counts in doubles, exact below 2^53 ns: MAX_SPAN keeps every wait
        // and every difference of instants below that (see limiter).
        if limit.span() > u128::from(MAX_SPAN) {
            let days = MAX_SPAN / (86_400 * SECOND);
            let (key, what) = match algorithm {
                Algorithm::Gcra { .. } => (key.to_owned(), "a bucket's burst * period / average"),
                _ => (format!("{key}.per"), "a window"),
            };
            let got = limit.span().div_ceil(u128::from(86_400 * SECOND));
            self.problem(key, format!("{what} spans at most {days} days (got {got} days)"));
            return None;
        }
        // A reservation moves the TAT up to span + max_delay past now, within MAX_SPAN so that
        // no admitted request meets the cap on a bucket's debt.
        let room = u128::from(MAX_SPAN) - limit.span();
        if u128::from(limit.max_delay()) > room {
            let msg = format!("must be at most {room} ns with this bucket's span (burst * period / average)");
            self.problem(format!("{key}.max_delay"), msg);
            return None;
        }
        Some(limit)
    }

    fn count(&mut self, key: String, value: i64) -> Option<NonZeroU32> {
        if value <= 0 {
            self.problem(key, format!("must be greater than 0 (got {value})"));
            None
        } else if value > i64::from(u32::MAX) {
            self.problem(key, format!("must be at most {} (got {value})", u32::MAX));
            None
        } else {
            NonZeroU32::new(value as u32)
        }
    }

    fn windowed(&mut self, key: &str, raw: &RawLimit) -> Option<Algorithm> {
        let requests = match raw.requests {
            Some(r) => self.count(format!("{key}.requests"), r),
            None => {
                self.problem(format!("{key}.requests"), "missing (how many requests per window)");
                None
            }
        };
        let window = match raw.per.as_deref() {
            Some(p) => self.leaf::<Per>(format!("{key}.per"), p).map(|p| p.0),
            None => {
                self.problem(
                    format!("{key}.per"),
                    "missing (second, minute, hour, day, week, month or a duration)",
                );
                None
            }
        };
        let sliding = self.choice(
            format!("{key}.algorithm"),
            "algorithm",
            raw.algorithm.as_deref().unwrap_or("fixed"),
            &[("fixed", false), ("sliding", true)],
        );
        let (requests, window) = (requests?, window?);
        Some(if sliding? {
            Algorithm::Sliding { requests, window }
        } else {
            Algorithm::Fixed { requests, window }
        })
    }

    /// `{ concurrent, hold }`: `hold` defaults to `answers.ticket_hold`.
    fn concurrency(&mut self, key: &str, raw: &RawLimit) -> Option<Algorithm> {
        let max = match raw.concurrent {
            Some(c) => self.count(format!("{key}.concurrent"), c),
            None => {
                self.problem(
                    format!("{key}.concurrent"),
                    "missing (how many requests may be in flight at once)",
                );
                None
            }
        };
        let hold = match raw.hold.as_deref() {
            Some(h) => self.hold(&format!("{key}.hold"), h),
            None => Some(self.default_hold),
        };
        if raw.counts.is_some() {
            self.problem(
                format!("{key}.counts"),
                "a concurrency limit holds one slot per request, whatever the request costs (remove counts)",
            );
            return None;
        }
        Some(Algorithm::Concurrent { max: max?, hold: hold? })
    }

    /// A window's or bucket's `counts`: `"cost"` (the default) or `"requests"`.
    fn counts(&mut self, key: &str, raw: &RawLimit) -> Option<Counts> {
        let counts = raw.counts.as_deref().unwrap_or("cost");
        let options = [("cost", Counts::Cost), ("requests", Counts::Requests)];
        self.choice(format!("{key}.counts"), "value", counts, &options)
    }

    /// How long a ticket holds its slot (a concurrency limit's `hold`, `answers.ticket_hold`):
    /// longer than 0s and at most 100 days ([`MAX_SPAN`], as for windows), in nanoseconds.
    pub(super) fn hold(&mut self, key: &str, value: &str) -> Option<Nanos> {
        let d = self.duration(key, value)?;
        if d.is_zero() {
            self.problem(key, "must be longer than 0s");
            return None;
        }
        match u64::try_from(d.as_nanos()).ok().filter(|ns| *ns <= MAX_SPAN) {
            Some(ns) => Some(ns),
            None => {
                let days = MAX_SPAN / (86_400 * SECOND);
                self.problem(key, format!("must be at most {days} days (got {})", quoted(value)));
                None
            }
        }
    }

    fn bucket(&mut self, key: &str, raw: &RawLimit) -> Option<Algorithm> {
        let average = match raw.average {
            Some(a) => self.count(format!("{key}.average"), a),
            None => {
                self.problem(
                    format!("{key}.average"),
                    "missing (requests per period; 0 or unlimited = true for no limit)",
                );
                None
            }
        };
        // Traefik's defaults: period 1s, burst 1.
        let period = self.duration(format!("{key}.period"), raw.period.as_deref().unwrap_or("1s"));
        if period.is_some_and(|p| p.is_zero()) {
            self.problem(format!("{key}.period"), "must be longer than 0s");
        }
        let burst = self.count(format!("{key}.burst"), raw.burst.unwrap_or(1));
        let max_delay = match raw.max_delay.as_deref() {
            Some(d) => self.max_delay(key, d),
            None => Some(None),
        };
        let (average, period, burst, max_delay) =
            (average?, period.filter(|p| !p.is_zero())?, burst?, max_delay?);
        let emission = u64::try_from(period.as_nanos() / u128::from(average.get())).unwrap_or(u64::MAX);
        if emission == 0 || period.as_nanos() > u128::from(366 * 86_400 * SECOND) {
            self.problem(key, "period / average must lie between 1ns and a year");
            return None;
        }
        // "auto" never takes a bucket past MAX_SPAN; a duration that does is refused in limit().
        let room = u128::from(MAX_SPAN).saturating_sub(u128::from(emission) * u128::from(burst.get()));
        let max_delay = max_delay.unwrap_or_else(|| {
            traefik_max_delay(average.get(), period.as_nanos()).min(u64::try_from(room).unwrap_or(u64::MAX))
        });
        Some(Algorithm::Gcra { emission, burst, max_delay })
    }

    /// A bucket's `max_delay`: `Some(None)` for "auto", `Some(Some(ns))` for a duration, `None`
    /// after recording a problem.
    fn max_delay(&mut self, key: &str, value: &str) -> Option<Option<Nanos>> {
        let key = format!("{key}.max_delay");
        if value == "auto" {
            return Some(None);
        }
        let d = self.duration(key.clone(), value)?;
        if d.as_nanos() > u128::from(MAX_DELAY) {
            let msg =
                format!("must be at most 1h, as a waiting request holds its connection (got {value:?})");
            self.problem(key, msg);
            return None;
        }
        Some(Some(u64::try_from(d.as_nanos()).expect("at most MAX_DELAY")))
    }
}

/// Traefik's maxDelay for `average` requests per `period` nanoseconds: `1 / (2 * rate)`, the
/// rate in whole requests per second (Go's `time.Duration(rate)` truncates), for rates of at
/// least one a second; 500 ms below that.
pub(super) fn traefik_max_delay(average: u32, period: u128) -> Nanos {
    let rate = u128::from(average) * u128::from(SECOND) / period;
    if rate == 0 {
        SECOND / 2
    } else {
        u64::try_from(u128::from(SECOND) / (2 * rate)).expect("at most half a second")
    }
}

/// Which keys of each shape a raw limit has.
#[derive(Clone, Copy)]
struct Shape {
    windowed: bool,
    bucket: bool,
    concurrent: bool,
}

impl Shape {
    fn of(raw: &RawLimit) -> Shape {
        Shape {
            windowed: raw.requests.is_some() || raw.per.is_some() || raw.algorithm.is_some(),
            bucket: raw.average.is_some()
                || raw.period.is_some()
                || raw.burst.is_some()
                || raw.max_delay.is_some(),
            concurrent: raw.concurrent.is_some() || raw.hold.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn plan_limit(limit: &str) -> Result<Config, String> {
        let text = format!("[plans.free]\nlimits = [{limit}]\n");
        Config::parse(&text, "test.toml", None).map_err(|e| e.to_string())
    }

    fn bucket(limit: &str) -> Algorithm {
        let config = plan_limit(limit).unwrap_or_else(|e| panic!("{e}"));
        config.policy.plans[0].limits[0].algorithm
    }

    fn max_delay(limit: &str) -> Nanos {
        match bucket(limit) {
            Algorithm::Gcra { max_delay, .. } => max_delay,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn max_delay_auto_is_traefiks_formula() {
        let ms = SECOND / 1000;
        // 1 / (2 * rate) for whole requests per second (Go truncates the rate), else 500 ms.
        assert_eq!(traefik_max_delay(100, u128::from(SECOND)), 5 * ms);
        assert_eq!(traefik_max_delay(50, u128::from(SECOND / 2)), 5 * ms);
        assert_eq!(traefik_max_delay(3, 2 * u128::from(SECOND)), 500 * ms, "1.5/s counts as 1/s");
        assert_eq!(traefik_max_delay(1, u128::from(SECOND)), 500 * ms);
        assert_eq!(traefik_max_delay(1, 2 * u128::from(SECOND)), 500 * ms, "below 1/s");
        assert_eq!(traefik_max_delay(3, 1), 0, "a rate past 1/ns waits for nothing");
        assert_eq!(max_delay("{ average = 100 }"), 5 * ms, "auto is the default");
        assert_eq!(max_delay("{ average = 100, max_delay = \"auto\" }"), 5 * ms);
        assert_eq!(max_delay("{ average = 100, max_delay = \"250ms\" }"), 250 * ms);
        assert_eq!(max_delay("{ average = 100, max_delay = \"0s\" }"), 0);
    }

    #[test]
    fn max_delay_is_refused_on_windows_and_past_an_hour() {
        let e = plan_limit("{ requests = 5, per = \"minute\", max_delay = \"1s\" }").unwrap_err();
        assert!(e.contains("plans.free.limits[0]: mixes window keys and bucket keys"), "{e}");
        let e = plan_limit("{ average = 5, max_delay = \"2h\" }").unwrap_err();
        assert!(e.contains("plans.free.limits[0].max_delay: must be at most 1h"), "{e}");
        let e = plan_limit("{ average = 5, max_delay = \"soon\" }").unwrap_err();
        assert!(e.contains("plans.free.limits[0].max_delay"), "{e}");
        // A bucket spanning the whole 100 days has no room left to wait: "auto" gives 0, a
        // duration is refused.
        assert_eq!(max_delay("{ average = 1, period = \"25d\", burst = 4 }"), 0);
        let e = plan_limit("{ average = 1, period = \"25d\", burst = 4, max_delay = \"1s\" }").unwrap_err();
        assert!(e.contains("plans.free.limits[0].max_delay: must be at most 0 ns"), "{e}");
    }

    #[test]
    fn average_0_means_no_limit_as_in_traefik() {
        let config =
            plan_limit("{ average = 0, period = \"1s\", burst = 10 }").unwrap_or_else(|e| panic!("{e}"));
        let plan = &config.policy.plans[0];
        assert!(plan.limits.is_empty());
        assert!(plan.unlimited, "a plan whose only bucket has average = 0 limits nothing");
        assert!(
            config.summary().contains("no limit (average = 0): plans.free.limits[0]"),
            "{}",
            config.summary()
        );
        // Beside another limit, only that bucket is left out.
        let config = plan_limit("{ average = 0 }, { requests = 5, per = \"minute\" }").unwrap();
        assert_eq!(config.policy.plans[0].limits.len(), 1);
        assert!(!config.policy.plans[0].unlimited);
        // Its other keys are still checked, and a negative average is still refused.
        assert!(plan_limit("{ average = 0, period = \"often\" }").unwrap_err().contains("period"));
        assert!(plan_limit("{ average = -1 }").unwrap_err().contains("must be greater than 0"));
    }
}

//! A list of limits (in a plan, or in a rule for one plan): each is a window
//! (`{ requests, per }`, fixed or sliding) or a bucket (`{ average, period, burst }`, GCRA,
//! as in Traefik's rateLimit middleware).

use std::num::NonZeroU32;

use super::leaf::{quoted, valid_name, Per, NAME_RULE};
use super::raw::RawLimit;
use super::validate::Validator;
use crate::limiter::{Algorithm, Limit, MAX_SPAN, SECOND};

impl Validator {
    /// Validates a list of limits; `rule` prefixes default names (`summarize.minute`).
    pub(super) fn limits(&mut self, key: &str, raw: &[RawLimit], rule: Option<&str>) -> Vec<Limit> {
        let mut out: Vec<Limit> = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let lkey = format!("{key}[{i}]");
            let Some(limit) = self.limit(&lkey, l, rule) else { continue };
            if let Some(other) = out.iter().find(|o| o.id == limit.id) {
                let msg =
                    format!("has the same window as limit {} in this list (merge them)", quoted(&other.name));
                self.problem(&lkey, msg);
            } else if out.iter().any(|o| o.name == limit.name) {
                let msg = format!("{} is used by another limit in this list", quoted(&limit.name));
                self.problem(format!("{lkey}.name"), msg);
            } else {
                out.push(limit);
            }
        }
        if out.len() > 32 {
            self.problem(key, format!("too many limits ({}, at most 32)", out.len()));
        }
        out
    }

    fn limit(&mut self, key: &str, raw: &RawLimit, rule: Option<&str>) -> Option<Limit> {
        const SHAPES: &str =
            "a limit is { requests, per } (with algorithm = \"fixed\" or \"sliding\") or { average, period, burst }";
        let windowed = raw.requests.is_some() || raw.per.is_some() || raw.algorithm.is_some();
        let bucket = raw.average.is_some() || raw.period.is_some() || raw.burst.is_some();
        let algorithm = match (windowed, bucket) {
            (true, true) => {
                self.problem(key, format!("mixes window keys and bucket keys ({SHAPES})"));
                return None;
            }
            (false, false) => {
                self.problem(key, format!("is empty ({SHAPES})"));
                return None;
            }
            (true, false) => self.windowed(key, raw)?,
            (false, true) => self.bucket(key, raw)?,
        };
        let default_name = match algorithm {
            Algorithm::Fixed { window, .. } | Algorithm::Sliding { window, .. } => window.name(),
            Algorithm::Gcra { .. } => "bucket".to_owned(),
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
        let limit = Limit::new(name, algorithm);
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

    fn bucket(&mut self, key: &str, raw: &RawLimit) -> Option<Algorithm> {
        let average = match raw.average {
            Some(a) => self.count(format!("{key}.average"), a),
            None => {
                self.problem(
                    format!("{key}.average"),
                    "missing (requests per period; for no limit use unlimited = true)",
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
        let (average, period, burst) = (average?, period.filter(|p| !p.is_zero())?, burst?);
        let emission = u64::try_from(period.as_nanos() / u128::from(average.get())).unwrap_or(u64::MAX);
        if emission == 0 || period.as_nanos() > u128::from(366 * 86_400 * SECOND) {
            self.problem(key, "period / average must lie between 1ns and a year");
            return None;
        }
        Some(Algorithm::Gcra { emission, burst })
    }
}

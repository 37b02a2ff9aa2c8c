//! Windows aligned to the UTC calendar: a minute starts at second 0, a day at 00:00 UTC, a week
//! on Monday 00:00 UTC (ISO 8601), a month on the 1st at 00:00 UTC. Other durations are aligned
//! to multiples of themselves since the Unix epoch.

use time::{Date, Month, OffsetDateTime};

use super::{Nanos, SECOND};

const MINUTE: Nanos = 60 * SECOND;
const HOUR: Nanos = 60 * MINUTE;
const DAY: Nanos = 24 * HOUR;
const WEEK: Nanos = 7 * DAY;
/// 1970-01-01 was a Thursday; ISO weeks start on Monday, three days earlier.
const WEEK_OFFSET: Nanos = 3 * DAY;

/// A counting window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    /// Any other length (whole seconds, at least one), aligned to the epoch.
    Every(Nanos),
}

impl Window {
    /// Parses `second`, `minute`, `hour`, `day`, `week`, `month` or a humane duration such as
    /// `"15m"` (whole seconds). Returns `None` for anything else.
    pub fn parse(s: &str) -> Option<Window> {
        Some(match s {
            "second" | "1s" => Window::Second,
            "minute" | "1m" => Window::Minute,
            "hour" | "1h" => Window::Hour,
            "day" | "1d" => Window::Day,
            "week" | "1w" => Window::Week,
            "month" => Window::Month,
            other => {
                let d = humantime::parse_duration(other).ok()?;
                if d.subsec_nanos() != 0 || d.as_secs() == 0 {
                    return None;
                }
                match Nanos::try_from(d.as_nanos()).ok()? {
                    SECOND => Window::Second,
                    MINUTE => Window::Minute,
                    HOUR => Window::Hour,
                    DAY => Window::Day,
                    WEEK => Window::Week,
                    n => Window::Every(n),
                }
            }
        })
    }

    /// A short name for headers and metrics: `"minute"`, or `"900s"` for other lengths.
    pub fn name(self) -> String {
        match self {
            Window::Second => "second".into(),
            Window::Minute => "minute".into(),
            Window::Hour => "hour".into(),
            Window::Day => "day".into(),
            Window::Week => "week".into(),
            Window::Month => "month".into(),
            Window::Every(n) => format!("{}s", n / SECOND),
        }
    }

    /// A number that tells windows apart, stable across builds.
    pub(crate) fn id(self) -> u64 {
        match self {
            Window::Second => SECOND,
            Window::Minute => MINUTE,
            Window::Hour => HOUR,
            Window::Day => DAY,
            Window::Week => WEEK,
            Window::Month => 1,
            Window::Every(n) => n,
        }
    }

    /// For windows of one fixed length: that length and the offset their starts are aligned
    /// with (weeks start on Monday). `None` for calendar months.
    pub fn alignment(self) -> Option<(Nanos, Nanos)> {
        match self {
            Window::Month => None,
            Window::Week => Some((WEEK, WEEK_OFFSET)),
            fixed => Some((fixed.id(), 0)),
        }
    }

    /// Length in nanoseconds of the window containing `now`.
    pub fn len_at(self, now: Nanos) -> Nanos {
        match self {
            Window::Month => {
                let (start, end) = month_bounds(now);
                end - start
            }
            fixed => fixed.id(),
        }
    }

    /// The window containing `now`: `[start, end)`.
    pub fn bounds(self, now: Nanos) -> (Nanos, Nanos) {
        match self {
            Window::Second => align(now, SECOND, 0),
            Window::Minute => align(now, MINUTE, 0),
            Window::Hour => align(now, HOUR, 0),
            Window::Day => align(now, DAY, 0),
            Window::Week => align(now, WEEK, WEEK_OFFSET),
            Window::Every(n) => align(now, n, 0),
            Window::Month => month_bounds(now),
        }
    }
}

fn align(now: Nanos, len: Nanos, offset: Nanos) -> (Nanos, Nanos) {
    let shifted = now + offset;
    let start = shifted - shifted % len;
    (start.saturating_sub(offset), start + len - offset)
}

fn month_bounds(now: Nanos) -> (Nanos, Nanos) {
    let secs = i64::try_from(now / SECOND).expect("u64 nanoseconds fit i64 seconds");
    let date =
        OffsetDateTime::from_unix_timestamp(secs).expect("any u64 nanosecond instant is a valid date").date();
    let first = first_of(date.year(), date.month());
    let next = match date.month() {
        Month::December => first_of(date.year() + 1, Month::January),
        m => first_of(date.year(), m.next()),
    };
    (first, next)
}

fn first_of(year: i32, month: Month) -> Nanos {
    let date = Date::from_calendar_date(year, month, 1).expect("the 1st exists in every month");
    let secs = date.midnight().assume_utc().unix_timestamp();
    u64::try_from(secs).expect("after the epoch") * SECOND
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds since the epoch of a UTC date and time.
    fn at(y: i32, m: u8, d: u8, hh: u8, mm: u8, ss: u8) -> Nanos {
        let date = Date::from_calendar_date(y, Month::try_from(m).unwrap(), d).unwrap();
        let t = date.with_hms(hh, mm, ss).unwrap().assume_utc().unix_timestamp();
        t as u64 * SECOND
    }

    #[test]
    fn a_minute_starts_at_second_zero() {
        let now = at(2026, 11, 23, 19, 5, 42) + 123;
        assert_eq!(Window::Minute.bounds(now), (at(2026, 11, 23, 19, 5, 0), at(2026, 11, 23, 19, 6, 0)));
    }

    #[test]
    fn a_day_starts_at_midnight_utc() {
        let now = at(2026, 12, 31, 23, 59, 59);
        assert_eq!(Window::Day.bounds(now), (at(2026, 12, 31, 0, 0, 0), at(2027, 1, 1, 0, 0, 0)));
    }

    #[test]
    fn a_week_starts_on_monday() {
        // 2026-11-23 is a Monday.
        let monday = at(2026, 11, 23, 0, 0, 0);
        assert_eq!(Window::Week.bounds(monday), (monday, at(2026, 11, 30, 0, 0, 0)));
        assert_eq!(Window::Week.bounds(monday - 1), (at(2026, 11, 16, 0, 0, 0), monday));
        assert_eq!(Window::Week.bounds(at(2026, 11, 29, 23, 59, 59)).0, monday);
    }

    #[test]
    fn a_month_resets_on_the_first_at_midnight_utc() {
        let now = at(2026, 11, 23, 19, 0, 0);
        assert_eq!(Window::Month.bounds(now), (at(2026, 11, 1, 0, 0, 0), at(2026, 12, 1, 0, 0, 0)));
        let december = at(2026, 12, 31, 23, 59, 59);
        assert_eq!(Window::Month.bounds(december), (at(2026, 12, 1, 0, 0, 0), at(2027, 1, 1, 0, 0, 0)));
        let first_instant = at(2027, 1, 1, 0, 0, 0);
        assert_eq!(Window::Month.bounds(first_instant).0, first_instant);
        assert_eq!(Window::Month.bounds(first_instant - 1).1, first_instant);
    }

    #[test]
    fn february_has_29_days_in_a_leap_year() {
        let (start, end) = Window::Month.bounds(at(2028, 2, 15, 12, 0, 0));
        assert_eq!((end - start) / SECOND, 29 * 86_400);
        let (start, end) = Window::Month.bounds(at(2027, 2, 15, 12, 0, 0));
        assert_eq!((end - start) / SECOND, 28 * 86_400);
        // 2100 is not a leap year (divisible by 100, not by 400); 2000 was.
        let (start, end) = Window::Month.bounds(at(2100, 2, 1, 0, 0, 0));
        assert_eq!((end - start) / SECOND, 28 * 86_400);
        let (start, end) = Window::Month.bounds(at(2000, 2, 29, 23, 0, 0));
        assert_eq!((end - start) / SECOND, 29 * 86_400);
    }

    #[test]
    fn parses_names_and_durations() {
        assert_eq!(Window::parse("minute"), Some(Window::Minute));
        assert_eq!(Window::parse("60s"), Some(Window::Minute));
        assert_eq!(Window::parse("15m"), Some(Window::Every(900 * SECOND)));
        assert_eq!(Window::parse("month"), Some(Window::Month));
        assert_eq!(Window::parse("1.5s"), None);
        assert_eq!(Window::parse("0s"), None);
        assert_eq!(Window::parse("fortnight"), None);
    }

    #[test]
    fn other_lengths_align_to_the_epoch() {
        let w = Window::Every(900 * SECOND);
        let now = at(2026, 11, 23, 19, 20, 1);
        assert_eq!(w.bounds(now), (at(2026, 11, 23, 19, 15, 0), at(2026, 11, 23, 19, 30, 0)));
    }
}

//! `[answers]`: what quotagate's answers carry beyond the decision itself: the RateLimit
//! fields on 200s, and which admitted requests get a ticket (and for how long by default).

use std::time::Duration;

use super::raw::RawAnswers;
use super::validate::Validator;

/// Validated `[answers]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answers {
    /// Whether a 200 carries `RateLimit-Policy` and `RateLimit` (a 429 always does). On by
    /// default: on a 2xx Traefik copies the auth answer's headers only to the upstream
    /// request, so the backend can relay them to its client only if they are there.
    pub ratelimit_on_allowed: bool,
    /// Which admitted requests get an `X-Quotagate-Ticket` (`tickets`).
    pub tickets: Tickets,
    /// How long a ticket of a request that holds no concurrency slot stays valid for reporting
    /// its cost, and the `hold` of a concurrency limit that sets none (`ticket_hold`, 1m).
    /// Longer than zero, at most `limiter::MAX_SPAN`.
    pub ticket_hold: Duration,
}

/// `answers.tickets`: which admitted requests get a ticket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tickets {
    /// Those that hold a slot of a concurrency limit (the default).
    #[default]
    Concurrent,
    /// Every admitted request with limits, so that backends can report costs.
    Always,
}

impl Default for Answers {
    fn default() -> Self {
        Answers {
            ratelimit_on_allowed: true,
            tickets: Tickets::Concurrent,
            ticket_hold: Duration::from_secs(60),
        }
    }
}

impl Validator {
    /// Validates `[answers]`. A bad value is a problem and leaves its default in the result, so
    /// that the sections validated after it (`ticket_hold` is the default `hold` of concurrency
    /// limits) are still checked.
    pub(super) fn answers(&mut self, raw: RawAnswers) -> Answers {
        let d = Answers::default();
        let tickets = match raw.tickets.as_deref() {
            Some(t) => self.choice(
                "answers.tickets",
                "value",
                t,
                &[("concurrent", Tickets::Concurrent), ("always", Tickets::Always)],
            ),
            None => None,
        };
        let ticket_hold = raw.ticket_hold.as_deref().and_then(|h| self.hold("answers.ticket_hold", h));
        Answers {
            ratelimit_on_allowed: raw.ratelimit_on_allowed.unwrap_or(d.ratelimit_on_allowed),
            tickets: tickets.unwrap_or(d.tickets),
            ticket_hold: ticket_hold.map_or(d.ticket_hold, Duration::from_nanos),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const PLAN: &str = "[plans.free]\nlimits = [{ requests = 9, per = \"minute\" }]\n";

    #[test]
    fn ratelimit_fields_on_allowed_answers_are_on_unless_switched_off() {
        let on = Config::parse(PLAN, "t.toml", None).unwrap();
        assert!(on.answers.ratelimit_on_allowed);
        let off = Config::parse(&format!("{PLAN}[answers]\nratelimit_on_allowed = false\n"), "t.toml", None);
        assert!(!off.unwrap().answers.ratelimit_on_allowed);
    }

    #[test]
    fn bad_answers_values_are_reported_with_their_key_paths() {
        let text = format!("{PLAN}[answers]\nratelimit_on_allowed = \"no\"\nratelimit = true\n");
        let problems = Config::parse(&text, "t.toml", None).unwrap_err().problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("answers.ratelimit_on_allowed: "), "{problems:?}");
        assert!(problems[1].starts_with("answers.ratelimit: "), "{problems:?}");
    }
}

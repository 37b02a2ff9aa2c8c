//! The time source. Only the server reads it, once per check; everything below gets `now`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::limiter::Nanos;

/// Wall-clock time, or a manual clock that tests move by hand.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock at `start` nanoseconds since the epoch.
    pub fn manual(start: Nanos) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start)))
    }

    pub fn now(&self) -> Nanos {
        match self {
            Clock::System => {
                let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
                Nanos::try_from(d.as_nanos()).unwrap_or(Nanos::MAX)
            }
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(t) = self {
            t.fetch_add(Nanos::try_from(by.as_nanos()).unwrap_or(Nanos::MAX), Ordering::SeqCst);
        }
    }

    /// Sets a manual clock; does nothing to the system clock.
    pub fn set(&self, now: Nanos) {
        if let Clock::Manual(t) = self {
            t.store(now, Ordering::SeqCst);
        }
    }
}

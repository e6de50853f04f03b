//! A warning that can repeat once per message (a dependency down under
//! traffic) is written at most once per interval, saying how many were left
//! out, so an outage does not flood the logs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LogThrottle {
    every: Duration,
    /// When the last line was written, and how many were left out since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    pub fn new(every: Duration) -> Self {
        Self { every, state: Mutex::new((None, 0)) }
    }

    /// `Some(left out since the last line)` when a line is due now, else
    /// `None` (and this one is counted as left out).
    pub fn due(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, skipped) = &mut *state;
        if last.is_some_and(|at| at.elapsed() < self.every) {
            *skipped += 1;
            return None;
        }
        *last = Some(Instant::now());
        Some(std::mem::take(skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.due(), Some(0));
        assert_eq!(throttle.due(), None);
        assert_eq!(throttle.due(), None);
        let passed = LogThrottle::new(Duration::ZERO);
        assert_eq!(passed.due(), Some(0));
        assert_eq!(passed.due(), Some(0));
    }
}

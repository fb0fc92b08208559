//! A rate limit for log lines about events that peers can cause at will.
//!
//! A log line per refused connection lets a flood of connects write megabytes of log. So such
//! events are counted, and reported at most once per period with the count since the last report.
//! The first event of a quiet spell is reported at once, so a lone event is not delayed.

use std::time::Duration;

use tokio::time::Instant;

/// Counts events and says when to report them; see the module docs.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    period: Duration,
    pending: u64,
    next_report: Option<Instant>,
}

impl LogThrottle {
    /// Reports at most once per `period`.
    pub(crate) fn every(period: Duration) -> Self {
        Self { period, pending: 0, next_report: None }
    }

    /// Counts one event; returns the count to report now, if a report is due.
    pub(crate) fn record(&mut self) -> Option<u64> {
        self.pending += 1;
        let now = Instant::now();
        if self.next_report.is_some_and(|due| now < due) {
            return None;
        }
        self.next_report = Some(now + self.period);
        Some(std::mem::take(&mut self.pending))
    }

    /// The events counted but not yet reported, if any.
    pub(crate) fn take_pending(&mut self) -> Option<u64> {
        Some(std::mem::take(&mut self.pending)).filter(|&count| count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn reports_the_first_event_at_once_then_at_most_once_per_period() {
        let mut throttle = LogThrottle::every(Duration::from_secs(1));
        assert_eq!(throttle.record(), Some(1));
        let reports: Vec<_> = (0..1000).filter_map(|_| throttle.record()).collect();
        assert!(reports.is_empty(), "no report within the period");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(throttle.record(), Some(1001), "the count since the last report");
        assert_eq!(throttle.take_pending(), None);
        assert_eq!(throttle.record(), None);
        assert_eq!(throttle.take_pending(), Some(1));
    }
}

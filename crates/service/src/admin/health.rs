//! Health: what the admin endpoints report, held in a `tokio::sync::watch` channel.
//!
//! A watch channel keeps only the latest value, which is all a probe wants to know: writers
//! (the server, the shutdown sequence, the watchdog) replace it, readers (`/livez`, `/readyz`)
//! look at it without waiting and without holding anyone up.

use std::time::Duration;

use tokio::time::Instant;

/// The service's health now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The listener is bound and accepting.
    pub listening: bool,
    /// Shutdown has begun: no new work should come here.
    pub shutting_down: bool,
    /// When the watchdog last ran (how late it was is `last_lag`).
    pub last_tick: Instant,
    /// How late the watchdog's last tick ran.
    pub last_lag: Duration,
}

impl Health {
    /// Health at start-up: not listening yet, the watchdog not yet run.
    pub fn starting() -> Self {
        Self { listening: false, shutting_down: false, last_tick: Instant::now(), last_lag: Duration::ZERO }
    }

    /// Whether to send new work here (`/readyz`).
    pub fn ready(&self) -> bool {
        self.listening && !self.shutting_down
    }

    /// Whether the runtime is responsive (`/livez`): the watchdog ticked within `period` plus
    /// `threshold`, and its last tick was not late by more than `threshold`. Nothing outside the
    /// process counts.
    pub fn live(&self, period: Duration, threshold: Duration) -> bool {
        self.last_tick.elapsed() <= period + threshold && self.last_lag <= threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn ready_only_while_listening_and_not_shutting_down_live_only_while_ticking() {
        let (period, threshold) = (Duration::from_millis(250), Duration::from_millis(100));
        let mut health = Health::starting();
        assert!(!health.ready(), "not before the listener is bound");
        health.listening = true;
        assert!(health.ready());
        health.shutting_down = true;
        assert!(!health.ready(), "not from the moment shutdown begins");
        assert!(health.live(period, threshold));
        tokio::time::sleep(Duration::from_millis(351)).await;
        assert!(!health.live(period, threshold), "no tick for longer than period + threshold");
        health.last_tick = Instant::now();
        health.last_lag = Duration::from_millis(101);
        assert!(!health.live(period, threshold), "the last tick was a stall");
    }
}

//! The stall watchdog: notices when something blocks the runtime.
//!
//! A task asks to be woken every `period` and measures how late it actually runs. On a healthy
//! runtime the lag is about a millisecond (the timer's resolution). A blocking call or a long CPU
//! loop on a worker delays every task queued behind it, this one included, so a large lag is the
//! symptom of the bug that `clippy.toml` tries to prevent. Lag over `threshold` is logged as a
//! warning with the figure, `STATS` reports the worst lag seen, and each tick is written to the
//! health state that `/livez` reads.
//!
//! This is the same signal tokio-console's "busy duration" shows, cheap enough to leave on in
//! production (see Alice Ryhl, "Async: What is blocking?", <https://ryhl.io/blog/async-what-is-blocking/>).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{self, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::health::Health;
use crate::stats::Stats;

/// Ticks every `period` until `stop` is cancelled, recording each tick's lag in `stats` and
/// `health`.
pub(crate) async fn run(
    period: Duration,
    threshold: Duration,
    stats: Arc<Stats>,
    health: watch::Sender<Health>,
    stop: CancellationToken,
) {
    let mut ticks = time::interval(period);
    // After a stall, measure from the late tick rather than firing a burst of catch-up ticks
    // (each of which would report a shrinking, meaningless lag).
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let scheduled = tokio::select! {
            () = stop.cancelled() => return,
            scheduled = ticks.tick() => scheduled,
        };
        let now = Instant::now();
        let lag = now.saturating_duration_since(scheduled);
        stats.record_lag(lag);
        health.send_modify(|health| {
            health.last_tick = now;
            health.last_lag = lag;
        });
        if lag > threshold {
            tracing::warn!(
                lag_ms = lag.as_millis(),
                "runtime stall: the watchdog ran {lag:?} late; something is blocking a worker thread"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_log::Captured;

    /// Real time: a stall is exactly what paused time cannot show. The test blocks its own
    /// runtime's only thread, as a blocking call in a task would, and asserts lower bounds only.
    #[test]
    fn a_stall_is_recorded_and_logged_with_its_figure() {
        let logs = Captured::default();
        let stats = Arc::new(Stats::default());
        tracing::subscriber::with_default(logs.subscriber(), || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            runtime.block_on(async {
                let stop = CancellationToken::new();
                let (health, _) = watch::channel(Health::starting());
                let watchdog = tokio::spawn(run(
                    Duration::from_millis(10),
                    Duration::from_millis(50),
                    Arc::clone(&stats),
                    health,
                    stop.clone(),
                ));
                time::sleep(Duration::from_millis(50)).await;
                #[expect(clippy::disallowed_methods, reason = "the stall this test measures")]
                std::thread::sleep(Duration::from_millis(200));
                time::sleep(Duration::from_millis(50)).await;
                stop.cancel();
                watchdog.await.unwrap();
            });
        });
        assert!(stats.worst_lag() >= Duration::from_millis(150), "worst lag {:?}", stats.worst_lag());
        let logs = logs.text();
        let warning = logs.lines().find(|line| line.contains("runtime stall")).expect("a stall warning");
        assert!(warning.contains("WARN"), "{warning}");
        let lag_ms: u64 =
            warning.split("lag_ms=").nth(1).and_then(|rest| rest.split(' ').next()).unwrap().parse().unwrap();
        assert!(lag_ms >= 150, "the warning names the lag: {warning}");
    }
}

//! The stall watchdog: notices when something blocks the runtime.
//!
//! A task asks to be woken every `period` and measures how late it actually runs. On a healthy
//! runtime the lag is about a millisecond (the timer's resolution). A blocking call or a long CPU
//! loop on a worker delays every task queued behind it, this one included, so a large lag is the
//! symptom of the bug that `clippy.toml` tries to prevent. Lag over `threshold` is logged as a
//! warning with the figure, and `STATS` reports the worst lag seen.
//!
//! This is the same signal tokio-console's "busy duration" shows, cheap enough to leave on in
//! production (see Alice Ryhl, "Async: What is blocking?", <https://ryhl.io/blog/async-what-is-blocking/>).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{self, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// Ticks every `period` until `stop` is cancelled, recording each tick's lag in `stats`.
pub async fn run(period: Duration, threshold: Duration, stats: Arc<Stats>, stop: CancellationToken) {
    let mut ticks = time::interval(period);
    // After a stall, measure from the late tick rather than firing a burst of catch-up ticks
    // (each of which would report a shrinking, meaningless lag).
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let scheduled = tokio::select! {
            () = stop.cancelled() => return,
            scheduled = ticks.tick() => scheduled,
        };
        let lag = Instant::now().saturating_duration_since(scheduled);
        stats.record_lag(lag);
        if lag > threshold {
            tracing::warn!(
                lag_ms = lag.as_millis(),
                "runtime stall: the watchdog ran {lag:?} late; something is blocking a worker thread"
            );
        }
    }
}

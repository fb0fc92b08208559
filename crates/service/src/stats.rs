//! Counters of the running service, reported by `STATS`.
//!
//! Plain atomics with relaxed ordering: each counter is independent, and a snapshot that is a
//! few increments stale is fine for observability. A gauge (connections, running jobs) moves
//! through a guard, so an early return or a panic cannot leave it counted up.
//!
//! Every job the queue accepts or refuses ends in exactly one outcome counter, so
//! `done + shed + panicked + timed_out + abandoned + cancelled` is the number of jobs submitted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters shared by every part of the service (behind an `Arc`).
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    rejected: AtomicU64,
    /// TLS handshakes failed, one counter per [`HandshakeFailure`], in the order of its `ALL`.
    handshakes_failed: [AtomicU64; HandshakeFailure::ALL.len()],
    jobs_running: AtomicU64,
    /// Jobs ended, one counter per [`JobOutcome`], in the order of [`JobOutcome::ALL`].
    jobs_ended: [AtomicU64; JobOutcome::ALL.len()],
    messages_published: AtomicU64,
    messages_delivered: AtomicU64,
    messages_missed: AtomicU64,
    gaps: AtomicU64,
    worst_lag_us: AtomicU64,
}

/// How a job ended: which outcome counter goes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// It produced its value.
    Done,
    /// Refused because the queue was full.
    Shed,
    /// It panicked.
    Panicked,
    /// It missed its deadline.
    TimedOut,
    /// Its requester went away (the connection closed) before the job ended: dropped unfinished.
    Abandoned,
    /// Shutdown came first: refused at drain, or dropped unfinished when the grace period ended.
    Cancelled,
}

impl JobOutcome {
    /// Every outcome, in the order `STATS` lists them.
    pub const ALL: [Self; 6] =
        [Self::Done, Self::Shed, Self::Panicked, Self::TimedOut, Self::Abandoned, Self::Cancelled];

    /// Its name: `STATS` says `jobs_<name>`, `/metrics` labels it `outcome="<name>"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Shed => "shed",
            Self::Panicked => "panicked",
            Self::TimedOut => "timed_out",
            Self::Abandoned => "abandoned",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Why a TLS handshake failed: which failure counter goes up. The reasons are ours, never the
/// peer's text, so a metric label cannot grow with what peers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// It did not finish within `--tls-handshake-timeout`.
    Timeout,
    /// A certificate was refused: the client's (none, an unknown CA, expired), or ours by the
    /// client.
    Certificate,
    /// The peer did not speak TLS (plaintext, garbage) or broke its rules.
    Protocol,
    /// The peer closed or reset the connection mid-handshake.
    Closed,
}

impl HandshakeFailure {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Self; 4] = [Self::Timeout, Self::Certificate, Self::Protocol, Self::Closed];

    /// Its name: `/metrics` labels it `reason="<name>"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Certificate => "certificate",
            Self::Protocol => "protocol",
            Self::Closed => "closed",
        }
    }
}

/// A gauge held up while this guard lives.
#[must_use = "the gauge goes down again when the guard is dropped"]
pub(crate) struct GaugeGuard<'a>(&'a AtomicU64);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    /// Counts an open connection until the guard drops.
    pub(crate) fn open_connection(&self) -> GaugeGuard<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(&self.connections)
    }

    /// Counts a running job until the guard drops.
    pub(crate) fn start_job(&self) -> GaugeGuard<'_> {
        self.jobs_running.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(&self.jobs_running)
    }

    /// Counts a connection refused at the connection limit.
    pub(crate) fn count_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed TLS handshake.
    #[cfg(feature = "tls")]
    pub(crate) fn count_handshake_failure(&self, reason: HandshakeFailure) {
        self.handshakes_failed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// TLS handshakes that failed for `reason` so far.
    pub fn handshakes_failed(&self, reason: HandshakeFailure) -> u64 {
        self.handshakes_failed[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts a job that is over.
    pub(crate) fn count_job(&self, outcome: JobOutcome) {
        self.outcome(outcome).fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a `PUBLISH`.
    pub(crate) fn count_published(&self) {
        self.messages_published.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `messages` written to subscribers.
    pub(crate) fn count_delivered(&self, messages: u64) {
        self.messages_delivered.fetch_add(messages, Ordering::Relaxed);
    }

    /// Counts messages a lagging subscriber missed (each `LAG` line's figure).
    pub(crate) fn count_missed(&self, missed: u64) {
        self.messages_missed.fetch_add(missed, Ordering::Relaxed);
    }

    /// Counts a `GAP` line written to a subscriber.
    pub(crate) fn count_gap(&self) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
    }

    /// `GAP` lines written to subscribers so far.
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Relaxed)
    }

    /// Messages published, delivered and missed so far.
    pub fn messages(&self) -> Messages {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Messages {
            published: load(&self.messages_published),
            delivered: load(&self.messages_delivered),
            missed: load(&self.messages_missed),
        }
    }

    /// Keeps the worst runtime lag seen.
    pub(crate) fn record_lag(&self, lag: Duration) {
        let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.worst_lag_us.fetch_max(micros, Ordering::Relaxed);
    }

    /// The worst runtime lag seen so far.
    pub fn worst_lag(&self) -> Duration {
        Duration::from_micros(self.worst_lag_us.load(Ordering::Relaxed))
    }

    /// Open connections now.
    pub fn open_connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections refused at the connection limit so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Jobs running now.
    pub fn running_jobs(&self) -> u64 {
        self.jobs_running.load(Ordering::Relaxed)
    }

    /// Jobs that ended with `outcome` so far.
    pub fn jobs_ended(&self, outcome: JobOutcome) -> u64 {
        self.outcome(outcome).load(Ordering::Relaxed)
    }

    fn outcome(&self, outcome: JobOutcome) -> &AtomicU64 {
        &self.jobs_ended[outcome as usize]
    }

    /// The `STATS` answer: `key=value` pairs, `jobs_queued` and `topics` supplied by their owners.
    pub fn render(&self, jobs_queued: usize, topics: usize) -> String {
        use std::fmt::Write as _;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut text = format!(
            "connections={} rejected={} handshakes_failed={} jobs_queued={jobs_queued} jobs_running={}",
            load(&self.connections),
            load(&self.rejected),
            self.handshakes_failed.iter().map(load).sum::<u64>(),
            load(&self.jobs_running),
        );
        for outcome in JobOutcome::ALL {
            // Writing to a String cannot fail.
            let _ = write!(text, " jobs_{}={}", outcome.name(), self.jobs_ended(outcome));
        }
        let Messages { published, delivered, missed } = self.messages();
        let _ = write!(
            text,
            " topics={topics} messages_published={published} messages_delivered={delivered} \
             messages_missed={missed} worst_lag_ms={}",
            self.worst_lag().as_millis(),
        );
        text
    }
}

/// The fan-out's message counters at one moment ([`Stats::messages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Messages {
    /// `PUBLISH` requests taken here: delivered to subscribers here, or handed to the broker.
    pub published: u64,
    /// `MSG` lines written to subscribers here.
    pub delivered: u64,
    /// Messages subscribers here missed: the sum of their `LAG` lines' figures.
    pub missed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_counter() {
        let stats = Stats::default();
        for (index, outcome) in JobOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, index, "ALL is in declaration order");
            stats.count_job(outcome);
            assert_eq!(stats.jobs_ended(outcome), 1, "{}", outcome.name());
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn every_handshake_failure_has_its_own_counter_and_stats_sums_them() {
        let stats = Stats::default();
        for (index, reason) in HandshakeFailure::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index, "ALL is in declaration order");
            stats.count_handshake_failure(reason);
            assert_eq!(stats.handshakes_failed(reason), 1, "{}", reason.name());
        }
        assert!(stats.render(0, 0).contains(" handshakes_failed=4 "));
    }

    #[test]
    fn gauges_fall_when_their_guard_drops_and_lag_keeps_the_worst() {
        let stats = Stats::default();
        let first = stats.open_connection();
        {
            let _second = stats.open_connection();
            assert_eq!(stats.open_connections(), 2);
        }
        assert_eq!(stats.open_connections(), 1);
        drop(first);
        stats.count_job(JobOutcome::Shed);
        stats.count_job(JobOutcome::Abandoned);
        stats.record_lag(Duration::from_millis(7));
        stats.record_lag(Duration::from_millis(3));
        assert_eq!(stats.jobs_ended(JobOutcome::Abandoned), 1);
        stats.count_missed(3);
        assert_eq!(
            stats.render(4, 2),
            "connections=0 rejected=0 handshakes_failed=0 jobs_queued=4 jobs_running=0 jobs_done=0 jobs_shed=1 \
             jobs_panicked=0 jobs_timed_out=0 jobs_abandoned=1 jobs_cancelled=0 topics=2 \
             messages_published=0 messages_delivered=0 messages_missed=3 worst_lag_ms=7"
        );
    }
}

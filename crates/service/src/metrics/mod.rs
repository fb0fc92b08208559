//! The service's latency histograms: per command, and a job's wait and run; with the HTTP front,
//! per route and status too (`http.rs`).
//!
//! Recording must cost next to nothing on the request path, where a pipelined burst answers a
//! million requests a second: a [`Histogram`] here is a fixed row of atomic counters, so an
//! observation is two relaxed atomic adds (one when it took no time), with no lock and no
//! allocation. The count is the buckets' sum, so it always agrees with them. A scrape
//! (`admin::scrape`) reads them with everything else as it is at that moment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::NoLabelSet;
use tokio::time::Instant;

#[cfg(feature = "http")]
#[cfg_attr(not(feature = "http"), path = "../part_left_out.rs")]
pub(crate) mod http;

/// Upper bounds of the latency buckets, in seconds: 100 µs to a minute (the longest job
/// deadline is an hour, but a request that takes a minute is already an outage).
const BOUNDS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// A latency histogram of atomic counters; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative), the last one past every bound (`+Inf`).
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        // Most answers are ready in the instant they start (a PING): the first bucket, and
        // nothing to add to the sum.
        if elapsed.is_zero() {
            self.buckets[0].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seconds = elapsed.as_secs_f64();
        let bucket = BOUNDS.iter().position(|&bound| seconds <= bound).unwrap_or(BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        // The last bound is `f64::INFINITY`, which the encoder writes `le="+Inf"`: OpenMetrics
        // requires that bucket, and `histogram_quantile` returns NaN without it.
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let sum = Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        encoder.encode_histogram::<NoLabelSet>(sum, self.count(), &buckets, None)
    }
}

/// The service's latency histograms.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Per command, in the order of the names given to [`Metrics::new`]: from reading a request
    /// to its answer being ready.
    pub(crate) requests: Box<[Histogram]>,
    /// The commands' names, in that order.
    pub(crate) commands: Box<[&'static str]>,
    /// From a job's submission to a worker starting it.
    pub(crate) job_wait: Histogram,
    /// From a worker starting a job to its end.
    pub(crate) job_run: Histogram,
    /// When the service started, for the pool's busy ratio.
    pub(crate) started: Instant,
    /// The HTTP front's, by route and status.
    #[cfg(feature = "http")]
    pub(crate) http: self::http::Metrics,
}

impl Metrics {
    /// Histograms for the commands named `commands` (the registry's order).
    pub(crate) fn new(commands: impl IntoIterator<Item = &'static str>) -> Self {
        let commands: Box<[&'static str]> = commands.into_iter().collect();
        let requests = commands.iter().map(|_| Histogram::default()).collect();
        Self {
            requests,
            commands,
            job_wait: Histogram::default(),
            job_run: Histogram::default(),
            started: Instant::now(),
            #[cfg(feature = "http")]
            http: self::http::Metrics::default(),
        }
    }

    /// Records the latency of one request to command number `command`.
    pub(crate) fn observe_request(&self, command: usize, elapsed: Duration) {
        if let Some(histogram) = self.requests.get(command) {
            histogram.observe(elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_that_holds_it() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_secs(3600));
        let counts: Vec<u64> = histogram.buckets.iter().map(|count| count.load(Ordering::Relaxed)).collect();
        assert_eq!(counts[0], 1, "50 µs <= 100 µs");
        assert_eq!(counts[3], 1, "1 ms <= 1 ms");
        assert_eq!(counts[BOUNDS.len()], 1, "an hour is past every bound");
        assert_eq!(histogram.count(), 3);
        // An answer ready at once: the first bucket, and the count, the sum unchanged.
        let sum = histogram.sum_nanos.load(Ordering::Relaxed);
        histogram.observe(Duration::ZERO);
        assert_eq!(histogram.buckets[0].load(Ordering::Relaxed), 2);
        assert_eq!((histogram.count(), histogram.sum_nanos.load(Ordering::Relaxed)), (4, sum));
    }
}

//! One backoff for every retry loop: the service's accept loop, the admin listener's, and the
//! fan-out relay's reconnection.
//!
//! A retry that does not pause spins a core (an accept loop out of file descriptors fails at
//! once, forever); one that pauses for a fixed time either waits too long after a blip or
//! hammers a peer that is down. So each pause doubles from a first bound up to a last one while
//! failures go on, and starts again after a success. A loop that many replicas run against one
//! peer (the relay reconnecting to Redis) draws each pause at random below the bound ("full
//! jitter", as in the AWS Architecture Blog's "Exponential Backoff And Jitter"), so replicas that
//! lost the broker together do not come back in step.

use std::hash::{BuildHasher as _, RandomState};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The pauses of one retry loop; see the module docs.
#[derive(Debug)]
pub(crate) struct Backoff {
    first: Duration,
    last: Duration,
    /// The next pause, or with jitter the bound below which it is drawn.
    next: Duration,
    jitter: bool,
}

impl Backoff {
    /// Pauses of `first`, doubling up to `last`.
    pub(crate) const fn new(first: Duration, last: Duration) -> Self {
        Self { first, last, next: first, jitter: false }
    }

    /// Pauses drawn at random below a bound that doubles from `first` up to `last`.
    #[cfg(feature = "redis")]
    pub(crate) const fn jittered(first: Duration, last: Duration) -> Self {
        Self { first, last, next: first, jitter: true }
    }

    /// After a success: the next failure pauses the least again.
    pub(crate) fn succeeded(&mut self) {
        self.next = self.first;
    }

    /// The pause before the next attempt, after a failure.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let bound = self.next;
        self.next = (self.next * 2).min(self.last);
        if self.jitter {
            // 53 random bits: a fraction in [0, 1) with f64's full precision.
            bound.mul_f64((random() >> 11) as f64 / (1u64 << 53) as f64)
        } else {
            bound
        }
    }

    /// The pause after an accept error, or `None` to accept again at once: an error about the
    /// one connection being accepted (reset before it was taken, for instance) says nothing
    /// about the listener.
    pub(crate) fn accept_failed(&mut self, error: &io::Error) -> Option<Duration> {
        let about_one_connection = matches!(
            error.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
        );
        (!about_one_connection).then(|| self.next_pause())
    }
}

/// A random number, different in every process: `RandomState` is seeded at random per
/// process, and hashing a counter with it draws numbers, which is all jitter (and the relay's
/// replica numbers) need.
pub(crate) fn random() -> u64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(DRAWS.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn accept_errors_back_off_and_per_connection_errors_do_not() {
        let mut backoff = Backoff::new(10 * MS, 1000 * MS);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        // EMFILE: the process is out of file descriptors; retrying at once would spin.
        let emfile = io::Error::from_raw_os_error(24);
        assert_eq!(backoff.accept_failed(&reset), None);
        let pauses: Vec<_> = (0..9).map(|_| backoff.accept_failed(&emfile).unwrap().as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(backoff.accept_failed(&reset), None, "a per-connection error does not pause either way");
        backoff.succeeded();
        assert_eq!(backoff.accept_failed(&emfile), Some(10 * MS));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn jittered_pauses_stay_below_a_bound_that_doubles_to_its_maximum() {
        let (first, last) = (50 * MS, 1000 * MS);
        let mut backoff = Backoff::jittered(first, last);
        let mut bound = first;
        let mut pauses = Vec::new();
        for _ in 0..12 {
            let pause = backoff.next_pause();
            assert!(pause < bound, "{pause:?} under {bound:?}");
            pauses.push(pause);
            bound = (bound * 2).min(last);
        }
        assert!(pauses.windows(2).any(|pair| pair[0] != pair[1]), "jittered: {pauses:?}");
        backoff.succeeded();
        assert!(backoff.next_pause() < first, "back to the start after a success");
    }
}

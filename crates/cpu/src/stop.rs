//! Stopping CPU work that nobody waits for any more.
//!
//! rayon cannot interrupt a running closure, and neither can anything else: a thread computing
//! is not at an `.await`. So CPU work that may outlive its caller looks at a [`Stop`] between
//! steps and gives up with [`Stopped`]. [`crate::CpuPool::spawn_stoppable`] hands the work its
//! `Stop`, and sets it when the [`crate::CpuTask`] is dropped: a deadline passed, the client
//! left, or the service shut down. The thread is then back within one step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag that says "nobody wants the result any more". Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

/// What stopped work returns instead of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped: nobody waits for the result")]
pub struct Stopped;

impl Stop {
    /// A flag not set yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(Stopped)` once the flag is set: `stop.check()?` between two steps of the work.
    ///
    /// The flag is read with relaxed ordering: it is a hint to give up early, and carries no
    /// data that needs synchronising.
    pub fn check(&self) -> Result<(), Stopped> {
        if self.0.load(Ordering::Relaxed) { Err(Stopped) } else { Ok(()) }
    }

    /// Sets the flag: the work gives up at its next [`Stop::check`].
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag() {
        let stop = Stop::new();
        let seen_by_the_work = stop.clone();
        assert_eq!(seen_by_the_work.check(), Ok(()));
        stop.set();
        assert_eq!(seen_by_the_work.check(), Err(Stopped));
    }
}

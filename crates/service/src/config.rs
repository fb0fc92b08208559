//! The service's settings, with defaults that suit production: a loopback address, and a finite
//! bound or timeout on everything a peer can make the service hold.
//!
//! [`Config`] is plain data, so tests build one with struct-update syntax
//! (`Config { idle_timeout: .., ..Config::default() }`); the command line in [`crate::cli`] fills
//! the same struct from flags and environment variables.

use std::net::SocketAddr;
use std::time::Duration;

/// Everything `serve` can be told. Each field is a bound or a timeout; none is infinite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The address to listen on. Loopback by default: exposing a service is a deliberate act.
    pub listen: SocketAddr,
    /// Connections open at once; one more is answered `ERR busy` and closed.
    pub max_connections: usize,
    /// While nothing is in flight on a connection, a complete request line must arrive within
    /// this time, or the connection is closed (a slow-loris peer trickling bytes is cut off too).
    pub idle_timeout: Duration,
    /// Bound on each write (and flush) to a peer; a peer that stops reading is dropped.
    pub write_timeout: Duration,
    /// The longest request line, in bytes, without its newline. Memory per connection is bounded
    /// by it, whatever the peer sends.
    pub max_line: usize,
    /// Requests a connection may have in flight at once (pipelining depth). Past it, the server
    /// stops reading from that connection until an answer has gone out.
    pub max_in_flight: usize,
    /// CPU jobs waiting for a worker; when the queue is full, a new job is answered `ERR busy`.
    pub queue_capacity: usize,
    /// CPU jobs running at once.
    pub workers: usize,
    /// Deadline of a CPU job, counted from when it was queued; past it the job is answered
    /// `ERR timeout`.
    pub job_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish before they are answered
    /// `ERR shutting-down`.
    pub shutdown_grace: Duration,
    /// Threads in the CPU (rayon) pool; 0 means one per core.
    pub cpu_threads: usize,
    /// How often the stall watchdog checks the runtime.
    pub watchdog_period: Duration,
    /// A watchdog tick later than this is logged as a stall.
    pub stall_threshold: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_line: 8 * 1024,
            max_in_flight: 32,
            queue_capacity: 64,
            workers: 2,
            job_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            cpu_threads: 0,
            watchdog_period: Duration::from_millis(250),
            stall_threshold: Duration::from_millis(100),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Checks the settings a server cannot run with: a zero bound (a channel of capacity 0 panics
    /// in tokio, a limit of 0 refuses everything) or a zero timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            ("max-connections", self.max_connections),
            ("max-line", self.max_line),
            ("max-in-flight", self.max_in_flight),
            ("queue-capacity", self.queue_capacity),
            ("workers", self.workers),
        ];
        let durations = [
            ("idle-timeout", self.idle_timeout),
            ("write-timeout", self.write_timeout),
            ("job-timeout", self.job_timeout),
            ("watchdog-period", self.watchdog_period),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError(format!("{name} must be at least 1")));
        }
        if let Some((name, _)) = durations.iter().find(|(_, value)| value.is_zero()) {
            return Err(ConfigError(format!("{name} must be longer than 0")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let config = Config::default();
        assert_eq!(config.validate(), Ok(()));
        assert!(config.listen.ip().is_loopback());
    }

    #[test]
    fn zero_bounds_and_timeouts_are_refused() {
        let zero_queue = Config { queue_capacity: 0, ..Config::default() };
        assert_eq!(
            zero_queue.validate().unwrap_err().to_string(),
            "invalid setting: queue-capacity must be at least 1"
        );
        let zero_idle = Config { idle_timeout: Duration::ZERO, ..Config::default() };
        assert_eq!(
            zero_idle.validate().unwrap_err().to_string(),
            "invalid setting: idle-timeout must be longer than 0"
        );
    }
}

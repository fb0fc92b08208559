//! The service's settings, each written once.
//!
//! Every setting is one field of [`Config`]. Its doc comment is its help text, and its `#[arg]`
//! attribute holds its flag, its default and its bounds. The same definition gives
//! `Config::default()` and the `serve` command line (where [`crate::cli`] adds an environment
//! variable to each flag). Nothing else repeats a name, a default or a bound.
//!
//! Every bound is finite. A value outside its bounds is refused with a one-line error before
//! anything starts. The upper bounds also keep the service clear of panics inside tokio: a
//! semaphore holds at most `usize::MAX >> 3` permits, and `Instant + Duration` panics on overflow.
//!
//! Tests and programs that embed the server build a `Config` in code, with struct-update syntax
//! (`Config { idle_timeout: .., ..Config::default() }`). Counts are `NonZero` there too, so a
//! zero bound cannot be written; the upper bounds are enforced only when parsing.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::time::Duration;

use clap::builder::TypedValueParser as _;

/// Everything `serve` can be told. Each field is a bound or a timeout; none is infinite.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Config {
    /// Address to listen on. Loopback by default: exposing a service is a deliberate act (use
    /// 0.0.0.0:PORT).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,

    /// Address of the admin HTTP listener (`/livez`, `/readyz`, `/metrics`). Loopback by default,
    /// like `--listen`; a container sets 0.0.0.0:7879 so that probes and Prometheus reach it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7879")]
    pub admin_listen: SocketAddr,

    /// Connections open at once; one more is answered `ERR busy` and closed.
    #[arg(long, value_name = "N", default_value = "1024", value_parser = count(1..=1_000_000))]
    pub max_connections: NonZeroUsize,

    /// Connections the kernel may hold for us before we accept them (the listen backlog).
    #[arg(long, value_name = "N", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub backlog: u32,

    /// While nothing is in flight, time for a complete request line to arrive. A peer trickling
    /// bytes without finishing a line is cut off too.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration(MILLISECOND..=DAY))]
    pub idle_timeout: Duration,

    /// Time for each write to a peer; a peer that stops reading is dropped.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration(MILLISECOND..=HOUR))]
    pub write_timeout: Duration,

    /// Longest request line, in bytes, without its line ending. It bounds the memory of a
    /// connection, whatever the peer sends.
    #[arg(long, value_name = "BYTES", default_value = "8192", value_parser = count(1..=16 << 20))]
    pub max_line: NonZeroUsize,

    /// Requests in flight per connection (pipelining depth). Past it, no new request from that
    /// connection starts until an answer has gone out.
    #[arg(long, value_name = "N", default_value = "32", value_parser = count(1..=1024))]
    pub max_in_flight: NonZeroUsize,

    /// CPU jobs that may wait for a worker; when the queue is full, a new job is answered
    /// `ERR busy`.
    #[arg(long, value_name = "N", default_value = "64", value_parser = count(1..=65_536))]
    pub queue_capacity: NonZeroUsize,

    /// CPU jobs that run at once.
    #[arg(long, value_name = "N", default_value = "2", value_parser = count(1..=1024))]
    pub workers: NonZeroUsize,

    /// Deadline of a CPU job, counted from when it is queued; past it the job is answered
    /// `ERR timeout`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration(MILLISECOND..=HOUR))]
    pub job_timeout: Duration,

    /// On shutdown, time to go on serving with `/readyz` answering 503 before draining, so load
    /// balancers stop sending new connections first (Kubernetes: the time its endpoints take).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration(Duration::ZERO..=FIVE_MINUTES))]
    pub drain_delay: Duration,

    /// On shutdown, time for in-flight requests to finish before they are answered
    /// `ERR shutting-down`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration(Duration::ZERO..=HOUR))]
    pub shutdown_grace: Duration,

    /// Messages each topic keeps for a subscriber that is behind; one further behind loses the
    /// oldest and is told how many (`LAG`).
    #[arg(long, value_name = "N", default_value = "64", value_parser = count(1..=65_536))]
    pub topic_capacity: NonZeroUsize,

    /// Topics that may exist at once; past it, a subscription to a new topic is `ERR busy`.
    #[arg(long, value_name = "N", default_value = "1024", value_parser = count(1..=1_000_000))]
    pub max_topics: NonZeroUsize,

    /// Threads in the CPU (rayon) pool; 0 means one per core.
    #[arg(long, value_name = "N", default_value = "0", value_parser = clap::value_parser!(u16).range(0..=1024).map(usize::from))]
    pub cpu_threads: usize,

    /// How often the stall watchdog checks the runtime (not a flag).
    #[arg(skip = Duration::from_millis(250))]
    pub watchdog_period: Duration,

    /// A watchdog tick later than this is logged as a stall (not a flag).
    #[arg(skip = Duration::from_millis(100))]
    pub stall_threshold: Duration,
}

pub(crate) const MILLISECOND: Duration = Duration::from_millis(1);
const FIVE_MINUTES: Duration = Duration::from_secs(300);
pub(crate) const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for Config {
    /// The defaults written in the `#[arg]` attributes, read through clap without the environment.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        <Defaults as clap::Parser>::try_parse_from(["defaults"])
            .expect("every default is within its bounds (tested)")
            .config
    }
}

/// A count within `range`.
fn count(range: RangeInclusive<u64>) -> impl clap::builder::TypedValueParser<Value = NonZeroUsize> {
    clap::value_parser!(u64).range(range).try_map(|value| {
        usize::try_from(value).ok().and_then(NonZeroUsize::new).ok_or("not a count this machine can hold")
    })
}

/// A human-readable duration (`250ms`, `5s`, `1m`) within `range`.
pub(crate) fn duration(
    range: RangeInclusive<Duration>,
) -> impl clap::builder::TypedValueParser<Value = Duration> {
    move |text: &str| {
        let value = humantime::parse_duration(text).map_err(|error| error.to_string())?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(format!(
                "{text} is not between {} and {}",
                humantime::format_duration(*range.start()),
                humantime::format_duration(*range.end())
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        Flags::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|flags| flags.config)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_are_loopback_and_within_bounds() {
        let config = Config::default();
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.max_connections.get(), 1024);
        assert_eq!(config.idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn durations_are_human_readable_and_bounded() {
        let config = parse(&["--idle-timeout", "250ms", "--job-timeout", "1m"]).unwrap();
        assert_eq!(config.idle_timeout, Duration::from_millis(250));
        assert_eq!(config.job_timeout, Duration::from_secs(60));
        let refused = parse(&["--idle-timeout", "300000000000y"]).unwrap_err();
        assert!(refused.contains("--idle-timeout"), "{refused}");
        let refused = parse(&["--job-timeout", "2h"]).unwrap_err();
        assert!(refused.contains("2h is not between 1ms and 1h"), "{refused}");
        assert!(parse(&["--idle-timeout", "0s"]).is_err());
        assert_eq!(parse(&["--shutdown-grace", "0s"]).unwrap().shutdown_grace, Duration::ZERO);
    }

    #[test]
    fn counts_are_bounded_on_both_sides() {
        for flag in ["--max-connections", "--workers", "--queue-capacity", "--max-in-flight", "--max-line"] {
            for bad in ["0", "-1", "18446744073709551615", "99999999999999999999999", "ten"] {
                assert!(parse(&[flag, bad]).is_err(), "{flag} {bad} was accepted");
            }
        }
        assert_eq!(parse(&["--workers", "1024"]).unwrap().workers.get(), 1024);
        assert!(parse(&["--backlog", "65536"]).is_err());
        assert!(parse(&["--cpu-threads", "1025"]).is_err());
        assert_eq!(parse(&["--cpu-threads", "0"]).unwrap().cpu_threads, 0);
    }
}

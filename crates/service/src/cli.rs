//! The command line: `serve` runs the service, `call` sends it one request.
//!
//! Every `serve` flag can also come from an environment variable (shown by `--help`), so the same
//! binary is configured by flags on a laptop and by the environment in a container. Durations are
//! human-readable (`250ms`, `5s`, `1m`), parsed by `humantime`; counts must be at least 1, so a
//! bad value is refused by clap with a one-line error before anything starts.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;

/// A robust tokio service: timed TCP I/O, bounded queues, a CPU pool and graceful shutdown.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_PKG_NAME"), version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGINT or SIGTERM, then shut down gracefully.
    Serve(ServeArgs),
    /// Send one request to a server and print its answer.
    #[command(after_help = "Exit status: 0 for an OK answer, 1 for an ERR answer, 3 if no answer came.")]
    Call(CallArgs),
}

/// Flags of `serve`; see [`Config`] for what each one bounds.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; use 0.0.0.0 to expose the service).
    #[arg(long, env = "SERVICE_LISTEN", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Connections open at once; one more is answered `ERR busy`.
    #[arg(long, env = "SERVICE_MAX_CONNECTIONS", default_value = "1024")]
    pub max_connections: NonZeroUsize,
    /// Time for a complete request to arrive while nothing is in flight.
    #[arg(long, env = "SERVICE_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Time for each write to a peer.
    #[arg(long, env = "SERVICE_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// Longest request line, in bytes.
    #[arg(long, env = "SERVICE_MAX_LINE", default_value = "8192")]
    pub max_line: NonZeroUsize,
    /// Requests in flight per connection (pipelining depth).
    #[arg(long, env = "SERVICE_MAX_IN_FLIGHT", default_value = "32")]
    pub max_in_flight: NonZeroUsize,
    /// CPU jobs that may wait; a full queue answers `ERR busy`.
    #[arg(long, env = "SERVICE_QUEUE_CAPACITY", default_value = "64")]
    pub queue_capacity: NonZeroUsize,
    /// CPU jobs that run at once.
    #[arg(long, env = "SERVICE_WORKERS", default_value = "2")]
    pub workers: NonZeroUsize,
    /// Deadline of a CPU job, from when it is queued.
    #[arg(long, env = "SERVICE_JOB_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub job_timeout: Duration,
    /// On shutdown, time for in-flight requests to finish.
    #[arg(long, env = "SERVICE_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Threads in the CPU pool (0: one per core).
    #[arg(long, env = "SERVICE_CPU_THREADS", default_value = "0")]
    pub cpu_threads: usize,
    /// Log format on stderr; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "SERVICE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Flags of `call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Server address (host:port).
    #[arg(long, env = "SERVICE_ADDR", default_value = "127.0.0.1:7878")]
    pub addr: String,
    /// Time to connect.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Time for the answer.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The request: a command and its argument, joined by spaces (`call ECHO hello world`).
    #[arg(required = true, num_args = 1..)]
    pub request: Vec<String>,
}

impl ServeArgs {
    /// The service settings these flags describe.
    pub fn config(&self) -> Config {
        Config {
            listen: self.listen,
            max_connections: self.max_connections.get(),
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            max_line: self.max_line.get(),
            max_in_flight: self.max_in_flight.get(),
            queue_capacity: self.queue_capacity.get(),
            workers: self.workers.get(),
            job_timeout: self.job_timeout,
            shutdown_grace: self.shutdown_grace,
            cpu_threads: self.cpu_threads,
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("service").chain(args.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    /// Every `serve` flag can come from the environment, under its own `SERVICE_*` name.
    /// (Setting variables in-process would need `unsafe` in edition 2024, which the workspace
    /// forbids, so this checks the definition; reading them is clap's job.)
    #[test]
    fn every_serve_flag_reads_an_environment_variable() {
        use clap::CommandFactory as _;
        let command = Cli::command();
        let serve = command.find_subcommand("serve").expect("a serve subcommand");
        let mut names = Vec::new();
        for arg in serve.get_arguments().filter(|arg| arg.get_long().is_some_and(|long| long != "help")) {
            let long = arg.get_long().unwrap_or_default();
            let env = arg.get_env().unwrap_or_else(|| panic!("--{long} has no environment variable"));
            let expected = format!("SERVICE_{}", long.replace('-', "_").to_uppercase());
            assert_eq!(env.to_str(), Some(expected.as_str()), "--{long}");
            names.push(long);
        }
        assert_eq!(names.len(), 12, "{names:?}");
    }

    #[test]
    fn serve_defaults_match_the_library_defaults() {
        let Command::Serve(args) = parse(&["serve"]).unwrap().command else { panic!("not serve") };
        assert_eq!(args.config(), Config::default());
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn durations_are_human_readable_and_bad_values_are_refused() {
        let Command::Serve(args) =
            parse(&["serve", "--idle-timeout", "250ms", "--job-timeout", "1m"]).unwrap().command
        else {
            panic!("not serve")
        };
        assert_eq!(args.idle_timeout, Duration::from_millis(250));
        assert_eq!(args.job_timeout, Duration::from_secs(60));
        assert!(parse(&["serve", "--idle-timeout", "soon"]).is_err());
        assert!(parse(&["serve", "--workers", "0"]).is_err());
        assert!(parse(&["serve", "--listen", "not-an-address"]).is_err());
    }

    #[test]
    fn call_joins_its_words_into_one_request() {
        let Command::Call(args) = parse(&["call", "ECHO", "hello", "world"]).unwrap().command else {
            panic!("not call")
        };
        assert_eq!(args.request.join(" "), "ECHO hello world");
        assert!(parse(&["call"]).is_err(), "a request is required");
    }
}

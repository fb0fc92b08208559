//! The command line: `serve` runs the service, `call` sends it one request, `load` measures it.
//!
//! `serve`'s flags are [`Config`]'s fields (flattened), plus the log format. Every `serve` flag
//! also reads an environment variable named after the program: `SERVICE_LISTEN` for `service`,
//! `PAYMENTS_API_LISTEN` for a project generated as `payments-api`. The prefix is computed from
//! the package name when the command line is built, since Rust sources carry no project name.
//! `--help` lists each variable.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::client::{self, load::LoadPlan};
use crate::commands::Commands;
use crate::config::Config;
use crate::telemetry::LogFormat;
#[cfg(feature = "tls")]
use crate::tls::ClientTlsArgs;

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
    /// Run the server until SIGINT or SIGTERM, then shut down gracefully (a second signal cuts
    /// the grace period short).
    Serve(Box<ServeArgs>),
    /// Send one request to a server and print its answer.
    #[command(after_help = Exit::HELP)]
    Call(CallArgs),
    /// Load a running server with requests and report throughput and latency.
    #[command(after_help = "Exit status: 0 when every answer answered a request (ERR answers \
                            included), 1 when a line came that answered none, 2 for a usage \
                            error, 3 if a connection failed or an answer did not come in time.")]
    Load(LoadArgs),
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service's settings.
    #[command(flatten)]
    pub config: Config,
    /// Log format on stderr; the level comes from RUST_LOG (default `info`).
    #[cfg_attr(
        feature = "otel",
        doc = "With OTEL_EXPORTER_OTLP_ENDPOINT set (an http:// URL), each request is a span sent there, and a JSON line logged inside one carries its trace_id."
    )]
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Flags of `call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: String,
    /// Time to connect.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Time for the answer.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// After an OK answer, print this many pushed lines (`MSG`, `LAG`, `GAP`) and stop. A command
    /// that subscribes prints them until Ctrl-C without it.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// The request: a command and its argument, joined by spaces (`call PUBLISH news hello world`).
    #[arg(required = true, num_args = 1.., value_parser = client::request_word)]
    pub request: Vec<String>,
    /// TLS, if the server speaks it.
    #[cfg(feature = "tls")]
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// Flags of `load`; see [`crate::client::load`] for what it measures and how.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// What to send, how hard, and for how long.
    #[command(flatten)]
    pub plan: LoadPlan,
    /// TLS, if the server speaks it.
    #[cfg(feature = "tls")]
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How the binary exits from `call` and `load`, and on a usage error. Scripts rely on these
/// codes, so they are decided here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the answer is `OK` or starts with `OK `.
    Ok = 0,
    /// 1: the server answered, with anything else (an `ERR` line).
    Err = 1,
    /// 2: the command line was wrong (a TLS file that cannot be used too); nothing was sent.
    /// (clap exits 2 for usage errors.)
    Usage = 2,
    /// 3: no complete answer came: refused, timed out, or closed before a full line.
    NoAnswer = 3,
}

impl Exit {
    const HELP: &'static str = "On a terminal, control characters, bidi overrides and zero-width \
                                characters in what the server sends are shown escaped (\\u{1b}); \
                                piped, lines are written byte for byte.\n\n\
                                Exit status: 0 for an OK answer, 1 for any other answer, 2 for a usage \
                                error, 3 if no complete answer came.";

    /// The exit status for an answer line.
    pub fn for_answer(line: &str) -> Self {
        if crate::protocol::is_ok(line) { Self::Ok } else { Self::Err }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit as u8)
    }
}

/// The prefix of every environment variable: the package name in upper case, `-` as `_`.
pub fn env_prefix() -> String {
    format!("{}_", env!("CARGO_PKG_NAME").to_uppercase().replace('-', "_"))
}

/// The whole command line: the derived definition, plus an environment variable for every
/// `serve` flag and for `call --addr`, plus the protocol in `serve --help`.
pub fn command() -> clap::Command {
    let prefix = env_prefix();
    let with_env = |arg: clap::Arg| match arg.get_long() {
        Some(long) if long != "help" => {
            let name = format!("{prefix}{}", long.to_uppercase().replace('-', "_"));
            arg.env(name)
        }
        _ => arg,
    };
    Cli::command()
        .mut_subcommand("serve", |serve| {
            serve.mut_args(with_env).after_long_help(Commands::registry().help())
        })
        .mut_subcommand("call", |call| call.mut_arg("addr", with_env))
        .mut_subcommand("load", |load| load.mut_arg("addr", with_env))
}

/// Parses the process's arguments and environment; exits with a one-line error (status 2) if
/// they are wrong, before anything starts.
pub fn parse() -> Cli {
    let cli = command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
        .unwrap_or_else(|error| exit_with(&error));
    // Settings each within bounds may still not fit together: refused the same way.
    if let Command::Serve(serve) = &cli.command
        && let Err(error) = serve.config.check()
    {
        eprintln!("error: {error}");
        std::process::exit(Exit::Usage as i32)
    }
    cli
}

/// Prints help or the version as clap does; otherwise the error on one line (clap's message
/// without its hints, which `--help` gives), and exits 2.
fn exit_with(error: &clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit()
    }
    eprintln!("{}", one_line(&error.render().to_string()));
    std::process::exit(Exit::Usage as i32)
}

/// The first paragraph of a clap message, on one line.
fn one_line(message: &str) -> String {
    let words: Vec<&str> =
        message.lines().take_while(|line| !line.trim().is_empty()).map(str::trim).collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let matches =
            command().try_get_matches_from(std::iter::once("service").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches)
    }

    #[test]
    fn the_definition_is_consistent() {
        command().debug_assert();
    }

    /// Every `serve` flag reads its own variable, named from the package. (Setting variables
    /// in-process needs `unsafe` in edition 2024, which the workspace forbids, so this checks
    /// the definition; reading them is clap's job, and the smoke test of the template's CI sets one.)
    #[test]
    fn every_serve_flag_reads_an_environment_variable_named_after_the_package() {
        let command = command();
        let serve = command.find_subcommand("serve").expect("a serve subcommand");
        let mut flags = 0;
        for arg in serve.get_arguments().filter(|arg| arg.get_long().is_some_and(|long| long != "help")) {
            let long = arg.get_long().unwrap_or_default();
            let env = arg.get_env().unwrap_or_else(|| panic!("--{long} has no environment variable"));
            let expected = format!("{}{}", env_prefix(), long.replace('-', "_").to_uppercase());
            assert_eq!(env.to_str(), Some(expected.as_str()), "--{long}");
            flags += 1;
        }
        assert!(flags >= 10, "{flags} flags");
        assert_eq!(env_prefix(), format!("{}_", env!("CARGO_PKG_NAME").to_uppercase().replace('-', "_")));
    }

    #[test]
    fn serve_defaults_are_the_library_defaults() {
        let Command::Serve(args) = parse(&["serve"]).unwrap().command else { panic!("not serve") };
        assert_eq!(args.config, Config::default());
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn serve_help_lists_the_protocol() {
        let help = command().find_subcommand_mut("serve").expect("serve").render_long_help().to_string();
        assert!(help.contains("Protocol v1"), "{help}");
    }

    #[test]
    fn call_joins_its_words_and_refuses_line_breaks() {
        let Command::Call(args) = parse(&["call", "PUBLISH", "news", "hello"]).unwrap().command else {
            panic!("not call")
        };
        assert_eq!(args.request.join(" "), "PUBLISH news hello");
        assert!(parse(&["call"]).is_err(), "a request is required");
        let refused = parse(&["call", "PUBLISH", "a\nPING"]).unwrap_err();
        assert_eq!(refused.exit_code(), Exit::Usage as i32);
    }

    #[test]
    fn load_flags_are_bounded_like_serve_s() {
        for (flag, bad) in [
            ("--duration", "0s"),
            ("--duration", "100000000000y"),
            ("--duration", "2days"),
            ("--timeout", "0s"),
            ("--connect-timeout", "2h"),
            ("--connections", "0"),
            ("--depth", "1025"),
            ("--rate", "0"),
        ] {
            assert!(parse(&["load", flag, bad]).is_err(), "load {flag} {bad} was accepted");
        }
        assert!(parse(&["load", "--duration", "1ms", "--timeout", "1h"]).is_ok());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn client_tls_flags_need_tls_and_a_certificate_needs_its_key() {
        for command in ["call", "load"] {
            for args in [
                &["--tls-ca", "ca.pem"][..],
                &["--tls-server-name", "localhost"],
                &["--tls", "--tls-cert", "c.pem"],
                &["--tls", "--tls-key", "k.pem"],
                &["--tls", "--tls-server-name", "not a name"],
            ] {
                let line: Vec<&str> =
                    [command].into_iter().chain(args.iter().copied()).chain(["PING"]).collect();
                assert!(parse(&line).is_err(), "{line:?} was accepted");
            }
        }
        let Command::Call(call) =
            parse(&["call", "--tls", "--tls-server-name", "::1", "PING"]).unwrap().command
        else {
            panic!("not call")
        };
        assert!(call.tls.tls && call.tls.tls_server_name.is_some());
    }

    #[test]
    fn usage_errors_fit_on_one_line() {
        for args in
            [&["serve", "--workers", "0"][..], &["serve", "--bogus"], &["call"], &["call", "PUBLISH", "a\nb"]]
        {
            let error = parse(args).unwrap_err();
            let line = one_line(&error.render().to_string());
            assert!(line.starts_with("error: ") && !line.contains('\n'), "{args:?}: {line}");
            assert!(line.len() > "error: ".len() + 10, "{args:?}: {line}");
        }
    }

    #[test]
    fn only_ok_or_ok_and_a_space_is_ok() {
        assert_eq!(Exit::for_answer("OK"), Exit::Ok);
        assert_eq!(Exit::for_answer("OK PONG"), Exit::Ok);
        assert_eq!(Exit::for_answer("OKAY"), Exit::Err);
        assert_eq!(Exit::for_answer("ERR busy"), Exit::Err);
        assert_eq!(Exit::for_answer(""), Exit::Err);
    }
}

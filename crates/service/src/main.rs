//! The binary: parse the command line, then `serve` or `call`.
//!
//! Each subcommand builds the runtime it needs: `serve` a multi-threaded one (many connections
//! across the cores), `call` a `current_thread` one (one connection; no threads to start).
//!
//! Exit status: `serve` exits 0 after a graceful shutdown and 1 if it cannot start; `call` as
//! [`CallExit`] says; a usage error exits 2 (clap's convention) before anything starts.

use std::process::ExitCode;

use anyhow::Context as _;
use service::cli::{CallArgs, CallExit, Command, ServeArgs};
use service::shutdown::Signals;
use service::{Client, Server, telemetry};

fn main() -> ExitCode {
    let cli = service::cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve(&args).map(|()| ExitCode::SUCCESS),
        Command::Call(args) => Ok(call(&args).into()),
    };
    outcome.unwrap_or_else(|error| {
        // `{:#}` prints the whole chain of causes on one line.
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let logging = telemetry::init(args.log_format)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async {
        // Before binding: once a client can connect, a signal must find its handler installed.
        let mut signals = Signals::install().context("cannot listen for shutdown signals")?;
        let server = Server::bind(&args.config)?;
        let shutdown = server.shutdown().clone();
        let run = server.run();
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => return anyhow::Ok(()),
            signal = signals.recv() => tracing::info!(signal, "shutting down"),
        }
        shutdown.begin.cancel();
        tokio::select! {
            () = &mut run => return Ok(()),
            signal = signals.recv() => tracing::warn!(signal, "second signal: cutting the grace period short"),
        }
        shutdown.abort.cancel();
        run.await;
        Ok(())
    })?;
    let dropped = logging.dropped_lines();
    if dropped > 0 {
        tracing::warn!(dropped, "log lines were dropped because stderr did not keep up");
    }
    Ok(())
}

fn call(args: &CallArgs) -> CallExit {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start tokio: {error}");
            return CallExit::NoAnswer;
        }
    };
    let request = args.request.join(" ");
    let answer = runtime.block_on(async {
        let mut client = Client::connect(args.addr.as_str(), args.connect_timeout, args.timeout).await?;
        client.request(&request).await
    });
    match answer {
        Ok(line) => {
            println!("{line}");
            CallExit::for_answer(&line)
        }
        Err(error) => {
            eprintln!("error: {}: {error}", args.addr);
            CallExit::NoAnswer
        }
    }
}

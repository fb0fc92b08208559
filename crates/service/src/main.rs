//! The binary: parse the command line, then `serve` or `call`.
//!
//! Each subcommand builds the runtime it needs: `serve` a multi-threaded one (many connections
//! across the cores), `call` a `current_thread` one (one connection; no threads to start).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use service::cli::{CallArgs, Cli, Command, ServeArgs};
use service::{Client, Server, telemetry};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve(&args).map(|()| ExitCode::SUCCESS),
        Command::Call(args) => call(&args),
    };
    outcome.unwrap_or_else(|error| {
        // `{:#}` prints the whole chain of causes on one line.
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format)?;
    let config = args.config();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async {
        let server = Server::bind(&config).await?;
        let stop = CancellationToken::new();
        let run = server.run(stop.clone());
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => return Ok(()),
            signal = service::shutdown::signal() => {
                let signal = signal.context("cannot listen for shutdown signals")?;
                tracing::info!(signal, "shutting down");
            }
        }
        stop.cancel();
        run.await;
        Ok(())
    })
}

fn call(args: &CallArgs) -> anyhow::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    let request = args.request.join(" ");
    let answer = runtime.block_on(async {
        let mut client = Client::connect(args.addr.as_str(), args.connect_timeout, args.timeout).await?;
        client.request(&request).await
    });
    match answer {
        Ok(line) => {
            println!("{line}");
            Ok(if line.starts_with("OK") { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Err(error) => {
            eprintln!("error: {}: {error}", args.addr);
            Ok(ExitCode::from(3))
        }
    }
}

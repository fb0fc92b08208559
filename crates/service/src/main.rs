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
    runtime.block_on(async {
        let answer = async {
            let mut client = Client::connect(args.addr.as_str(), args.connect_timeout, args.timeout).await?;
            client.request(&request).await.map(|line| (client, line))
        };
        let (mut client, line) = match answer.await {
            Ok(answered) => answered,
            Err(error) => {
                eprintln!("error: {}: {error}", args.addr);
                return CallExit::NoAnswer;
            }
        };
        println!("{line}");
        let exit = CallExit::for_answer(&line);
        // Pushed lines follow an OK to a command that subscribes, or when --count asks for them.
        let pushes = args.count.or_else(|| subscribes(&request).then_some(u64::MAX)).unwrap_or(0);
        if exit != CallExit::Ok {
            return exit;
        }
        for _ in 0..pushes {
            tokio::select! {
                push = client.next_push(None) => match push {
                    Ok(push) => println!("{push}"),
                    Err(error) => {
                        eprintln!("error: {}: {error}", args.addr);
                        break;
                    }
                },
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        exit
    })
}

/// Whether the request's command may push lines after its answer (the registry says).
fn subscribes(request: &str) -> bool {
    let name = request.split(' ').next().unwrap_or_default();
    service::commands::REGISTRY.iter().any(|spec| spec.pushes && spec.name.eq_ignore_ascii_case(name))
}

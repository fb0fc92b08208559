//! The binary: parse the command line, then `serve`, `call` or `load`.
//!
//! Each subcommand builds the runtime it needs: `serve` a multi-threaded one (many connections
//! across the cores; the service adds one of its own for subscribed connections, see
//! `fanout/subscriber_threads.rs`), `call` a `current_thread` one (one connection; no threads to
//! start), `load` a multi-threaded one (the client must not be the bottleneck).
//!
//! Exit status: `serve` exits 0 after a graceful shutdown, 1 if it cannot start (a port it
//! cannot bind, a fan-out broker that does not answer) and 2 for a TLS file it cannot use (a
//! wrong flag); `call` and `load` as [`Exit`] says; a usage error exits 2 (clap's convention)
//! before anything starts.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use service::cli::{CallArgs, Command, Exit, LoadArgs, ServeArgs};
use service::shutdown::Signals;
use service::{Client, ClientError, Config, Server, StartError, telemetry};

/// At exit, how long the runtime waits for blocking threads still running: only reads of the
/// TLS files are left by then (one a SIGHUP just started, or one stuck past its deadline).
const STUCK_THREADS_WAIT: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    service::tls::install_default_provider();
    let cli = service::cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Call(args) => Ok(call(&args).into()),
        Command::Load(args) => load(&args).map(ExitCode::from),
    };
    outcome.unwrap_or_else(|error| {
        // `{:#}` prints the whole chain of causes on one line.
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    // First, while this is the only thread: see `Signals::hold_back` for why.
    let held = Signals::hold_back().context("cannot hold back signals")?;
    // Before the runtime: with traces, the exporter's HTTP client is built now.
    let mut logging = telemetry::init(args.log_format)?;
    let config = Config { trace_requests: logging.traced(), ..args.config.clone() };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    // Sockets and tasks need a runtime's context; nothing runs until `block_on`.
    let context = runtime.enter();
    // Before binding: once a client can connect, a signal must find its handler installed.
    let mut signals = Signals::install(held).context("cannot listen for shutdown signals")?;
    #[cfg(feature = "redis")]
    if let Some(exit) = check_broker(&runtime, &config)? {
        return Ok(exit.into());
    }
    // Here, in sync code, because with TLS binding reads the certificate files. A file that
    // cannot be used is a wrong flag: status 2, as for any usage error.
    let server = match Server::bind(&config) {
        Err(StartError::Tls(error)) => {
            eprintln!("error: {error}");
            return Ok(Exit::Usage.into());
        }
        bound => bound?,
    };
    let reload = server.tls_reloader().cloned();
    let deadline = run_until_stopped(&runtime, server, &mut signals, reload.as_ref(), &config);
    // Every task has ended. A read of the TLS files may still hold a blocking thread: one a
    // SIGHUP just started, or one stuck past its deadline (a hung mount), which dropping the
    // runtime would wait for without end (tokio's `Runtime::shutdown_timeout` docs). The runtime
    // waits for it at most `STUCK_THREADS_WAIT`.
    let running = reload.as_ref().map_or(0, service::tls::Reloader::reads_running);
    if running > 0 {
        tracing::info!(running, "reads of the TLS files still running; exiting without waiting for them");
    }
    drop(context);
    runtime.shutdown_timeout(STUCK_THREADS_WAIT);
    // Off every runtime thread: the exporter's shutdown blocks (see telemetry/otel.rs).
    let left = deadline.map_or(config.shutdown_grace, |at| at.saturating_duration_since(Instant::now()));
    logging.finish_traces(left);
    let dropped = logging.dropped_lines();
    if dropped > 0 {
        tracing::warn!(dropped, "log lines were dropped because stderr did not keep up");
    }
    Ok(ExitCode::SUCCESS)
}

/// A broker that does not answer now is a wrong address or password: refuse to start (each step
/// bounded) rather than serve with fan-out silently broken. `Some` exit status if `serve` must
/// stop with it.
#[cfg(feature = "redis")]
fn check_broker(runtime: &tokio::runtime::Runtime, config: &Config) -> anyhow::Result<Option<Exit>> {
    let Some(url) = &config.fanout_url else { return Ok(None) };
    // Its CA file is a flag's file, refused as the TLS files are: status 2.
    #[cfg(feature = "tls")]
    let ca = match config
        .fanout_ca
        .as_deref()
        .map(|path| service::tls::read_ca("--fanout-ca", path))
        .transpose()
    {
        Ok(ca) => ca,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Some(Exit::Usage));
        }
    };
    #[cfg(not(feature = "tls"))]
    let ca = None::<Vec<u8>>;
    runtime
        .block_on(url.check(ca.as_deref()))
        .map_err(|error| anyhow::anyhow!("--fanout-url {url}: {error}"))?;
    Ok(None)
}

/// Serves until the server ends, or a signal stops it (a second one cuts the grace period
/// short). Returns when the shutdown must be over, if a signal began one: the drain delay and
/// the grace period after it, or at once after a second signal. What is left of it at the end is
/// the time the traces' exporter gets to send its last spans.
fn run_until_stopped(
    runtime: &tokio::runtime::Runtime,
    server: Server,
    signals: &mut Signals,
    reload: Option<&service::tls::Reloader>,
    config: &Config,
) -> Option<Instant> {
    runtime.block_on(async {
        let shutdown = server.shutdown().clone();
        let run = server.run();
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => return None,
            signal = signals.stop(reload) => tracing::info!(signal, "shutting down"),
        }
        let deadline = Instant::now() + config.drain_delay + config.shutdown_grace;
        shutdown.begin.cancel();
        tokio::select! {
            () = &mut run => return Some(deadline),
            signal = signals.stop(reload) => tracing::warn!(signal, "second signal: cutting the grace period short"),
        }
        shutdown.abort.cancel();
        run.await;
        Some(Instant::now())
    })
}

fn call(args: &CallArgs) -> Exit {
    // Before the runtime: the TLS files and the system's roots are read from disk.
    #[cfg(feature = "tls")]
    let tls = match args.tls.load() {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::Usage;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start tokio: {error}");
            return Exit::NoAnswer;
        }
    };
    runtime.block_on(async {
        let (addr, connect, timeout) = (args.addr.as_str(), args.connect_timeout, args.timeout);
        #[cfg(feature = "tls")]
        if let Some(tls) = &tls {
            return converse(args, Client::connect_tls(addr, tls, connect, timeout).await).await;
        }
        converse(args, Client::connect(addr, connect, timeout).await).await
    })
}

/// `call` once connected (or not): the request, its answer, then any pushed lines.
async fn converse<S>(args: &CallArgs, connected: Result<Client<S>, ClientError>) -> Exit
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = args.request.join(" ");
    // Answers and pushes carry other peers' bytes: on a terminal, show what could act on it.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let show = |line: &str| {
        if terminal {
            println!("{}", service::protocol::escaped(line));
        } else {
            println!("{line}");
        }
    };
    let answer = async {
        let mut client = connected?;
        client.request(&request).await.map(|line| (client, line))
    };
    let (mut client, line) = match answer.await {
        Ok(answered) => answered,
        Err(error) => {
            eprintln!("error: {}: {error}", args.addr);
            return Exit::NoAnswer;
        }
    };
    show(&line);
    let exit = Exit::for_answer(&line);
    // Pushed lines follow an OK to a command that subscribes, or when --count asks for them.
    let pushes = args.count.or_else(|| subscribes(&request).then_some(u64::MAX)).unwrap_or(0);
    if exit != Exit::Ok {
        return exit;
    }
    for _ in 0..pushes {
        tokio::select! {
            push = client.next_push(None) => match push {
                Ok(push) => show(&push),
                Err(error) => {
                    eprintln!("error: {}: {error}", args.addr);
                    break;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    exit
}

/// Whether the request's command may push lines after its answer (the registry says).
fn subscribes(request: &str) -> bool {
    let name = request.split(' ').next().unwrap_or_default();
    service::commands::Commands::registry().find(name).is_some_and(|(_, spec)| spec.pushes)
}

/// `load`: runs the plan on a multi-threaded runtime (the client must not be the bottleneck),
/// showing a live count on a terminal and nothing when stderr is piped.
fn load(args: &LoadArgs) -> anyhow::Result<Exit> {
    use std::io::IsTerminal as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    // Before the runtime: the TLS files and the system's roots are read from disk.
    #[cfg(feature = "tls")]
    let plan = match args.tls.load() {
        Ok(tls) => service::load::LoadPlan { tls, ..args.plan.clone() },
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Exit::Usage);
        }
    };
    #[cfg(not(feature = "tls"))]
    let plan = args.plan.clone();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async {
        let progress = Arc::new(AtomicU64::new(0));
        let run = service::load::run(&plan, Arc::clone(&progress));
        tokio::pin!(run);
        let live = std::io::stderr().is_terminal();
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(250));
        let started = tokio::time::Instant::now();
        let report = loop {
            tokio::select! {
                report = &mut run => break report,
                _ = ticks.tick(), if live => {
                    let done = progress.load(Ordering::Relaxed);
                    let line = format!("\r{done} answers, {:.0}/s   ", done as f64 / started.elapsed().as_secs_f64().max(0.001));
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut tokio::io::stderr(), line.as_bytes()).await;
                }
            }
        };
        if live {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut tokio::io::stderr(), b"\r\x1b[K").await;
        }
        match report {
            Ok(report) => {
                if args.json {
                    println!("{}", report.to_json());
                } else {
                    println!("{report}");
                }
                if report.unexpected > 0 {
                    eprintln!("error: {}: {} lines answered no request", args.plan.addr, report.unexpected);
                    return Ok(Exit::Err);
                }
                Ok(Exit::Ok)
            }
            Err(error) => {
                eprintln!("error: {}: {error}", args.plan.addr);
                Ok(Exit::NoAnswer)
            }
        }
    })
}

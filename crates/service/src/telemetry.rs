//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON.
//!
//! Each connection runs in a span carrying its peer address (see [`crate::App`]), so every line
//! a connection logs says whose it is. Errors are logged once, where they are handled.
//!
//! With the `console` feature (and `RUSTFLAGS="--cfg tokio_unstable"`), a tokio-console layer is
//! added beside the log output; it sees every task regardless of `RUST_LOG`.

use std::io::IsTerminal as _;

use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::cli::LogFormat;

/// Installs the global subscriber. Fails on an invalid `RUST_LOG`, with the reason.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()
        .map_err(|error| anyhow::anyhow!("invalid RUST_LOG: {error}"))?;
    let output = match format {
        // Colours only for a person at a terminal, not for a log collector reading a pipe.
        LogFormat::Text => {
            fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).boxed()
        }
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let registry = tracing_subscriber::registry().with(output.with_filter(filter));
    #[cfg(feature = "console")]
    let registry = registry.with(console_subscriber::spawn());
    registry.try_init()?;
    Ok(())
}

//! The server's side of TLS: the certificate in use, its reload, and each connection's handshake.
//!
//! The config in use sits in a `watch` channel. Each handshake takes the config current at its
//! start, and a reload replaces it for the handshakes after; a connection keeps the certificate
//! it shook hands with for its whole life, as TLS wants (cert-manager renews well before expiry,
//! so old connections end in time anyway).
//!
//! A reload comes from SIGHUP, or from the watch: every `tls_watch_period` (a minute) it
//! compares the files' modification times with those of the last load. Kubernetes updates a
//! mounted Secret in place and sends no signal, and the distroless image has no `kill` to send
//! one with.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Problem, TlsError, certificates, key_refused, private_key, provider, roots};
use crate::config::Config;
use crate::log_throttle::LogThrottle;
use crate::stats::{HandshakeFailure, Stats};

/// At most one log line per this period about failed handshakes, as for refused connections:
/// peers can fail handshakes at will.
const FAILURES_LOG_PERIOD: Duration = Duration::from_secs(1);

/// The files `serve` takes its TLS settings from.
#[derive(Debug, Clone)]
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// When each file was last modified, as far as it can be told: what the watch compares.
type Stamp = Vec<Option<SystemTime>>;

impl ServerFiles {
    /// When each file was last modified. Blocking, like [`ServerFiles::load`].
    fn stamp(&self) -> Stamp {
        let paths = [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()];
        #[expect(clippy::disallowed_methods, reason = "called off the runtime, as `load` is")]
        let modified = |path: &PathBuf| std::fs::metadata(path).and_then(|metadata| metadata.modified()).ok();
        paths.into_iter().flatten().map(modified).collect()
    }

    /// Reads and checks every file, and builds the config. Blocking: see the module docs.
    fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let chain = certificates("--tls-cert", &self.cert)?;
        let key = private_key("--tls-key", &self.key)?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Provider)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = roots("--tls-client-ca", path)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|error| TlsError::file("--tls-client-ca", path, Problem::Verifier(error)))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        // rustls checks that the key is the certificate's (`CertifiedKey::keys_match`).
        let config = builder.with_single_cert(chain, key).map_err(|error| key_refused(&self.key, error))?;
        Ok(Arc::new(config))
    }
}

/// TLS for the service port: the acceptor that each connection's task runs, and the reloader.
/// `None` without `--tls-cert` (plain TCP). Reads the files: blocking, see the module docs.
pub(crate) fn start(
    config: &Config,
    stats: Arc<Stats>,
    tracker: TaskTracker,
) -> Result<Option<(Acceptor, Reloader)>, TlsError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let files = ServerFiles { cert: cert.clone(), key: key.clone(), client_ca: config.tls_client_ca.clone() };
    // Stamped before loading: a change in between is seen by the first look of the watch.
    let stamp = files.stamp();
    let (current, receiver) = watch::channel(files.load()?);
    let acceptor = Acceptor {
        current: receiver,
        timeout: config.tls_handshake_timeout,
        stats,
        failures: Arc::new(Mutex::new(LogThrottle::every(FAILURES_LOG_PERIOD))),
    };
    Ok(Some((
        acceptor,
        Reloader { files, current: Arc::new(current), tracker, stamp: Arc::new(Mutex::new(stamp)) },
    )))
}

/// How a connection's handshake ended.
pub(crate) enum Handshake<S> {
    /// The peer is in: serve it over this stream.
    Done(Box<TlsStream<S>>),
    /// Closed: the handshake failed or timed out (counted and logged), or shutdown came first.
    Closed,
}

/// Runs the handshake of each connection; cloned into every connection's task.
#[derive(Clone)]
pub(crate) struct Acceptor {
    current: watch::Receiver<Arc<ServerConfig>>,
    timeout: Duration,
    stats: Arc<Stats>,
    failures: Arc<Mutex<LogThrottle>>,
}

impl Acceptor {
    /// Shakes hands over `stream` with the config current now, within the handshake timeout. A
    /// connection still shaking hands when `drain` is cancelled has nothing in flight, so it is
    /// closed at once.
    pub(crate) async fn accept<S>(&self, stream: S, drain: &CancellationToken) -> Handshake<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.current.borrow()));
        let outcome = tokio::select! {
            biased;
            () = drain.cancelled() => return Handshake::Closed,
            outcome = time::timeout(self.timeout, acceptor.accept(stream)) => outcome,
        };
        let (reason, error) = match outcome {
            Ok(Ok(stream)) => return Handshake::Done(Box::new(stream)),
            Ok(Err(error)) => (HandshakeFailure::of(&error), error),
            Err(_elapsed) => (HandshakeFailure::Timeout, std::io::ErrorKind::TimedOut.into()),
        };
        self.stats.count_handshake_failure(reason);
        tracing::debug!(reason = reason.name(), %error, "TLS handshake failed");
        // A poisoned lock only means a panic elsewhere mid-count: the count is still usable.
        let report = self.failures.lock().unwrap_or_else(PoisonError::into_inner).record();
        if let Some(failed) = report {
            tracing::info!(failed, "TLS handshakes failed (RUST_LOG=debug names each)");
        }
        Handshake::Closed
    }

    /// Logs the failures counted but not yet reported (at shutdown).
    pub(crate) fn flush_log(&self) {
        let pending = self.failures.lock().unwrap_or_else(PoisonError::into_inner).take_pending();
        if let Some(failed) = pending {
            tracing::info!(failed, "TLS handshakes failed (RUST_LOG=debug names each)");
        }
    }
}

impl HandshakeFailure {
    /// The reason of a failed handshake, from the error tokio-rustls returns: rustls's own
    /// errors come wrapped in an `io::Error`; any other is the socket's.
    fn of(error: &std::io::Error) -> Self {
        use rustls::AlertDescription as Alert;
        match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            None => Self::Closed,
            Some(
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertRevocationList(_),
            ) => Self::Certificate,
            // The peer refused our certificate.
            Some(rustls::Error::AlertReceived(
                Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA,
            )) => Self::Certificate,
            Some(_) => Self::Protocol,
        }
    }
}

/// Reloads the certificate, key and client CA from their files (SIGHUP does).
#[derive(Clone)]
pub struct Reloader {
    files: ServerFiles,
    current: Arc<watch::Sender<Arc<ServerConfig>>>,
    /// Where the reading task is tracked, so shutdown waits for it.
    tracker: TaskTracker,
    /// The files' modification times when they were last read, by a load that took or not.
    stamp: Arc<Mutex<Stamp>>,
}

impl Reloader {
    /// Reads the files again (on `spawn_blocking`). If they are good, handshakes from now on use
    /// them, and open connections keep what they have; if not, the old ones stay in use. Either
    /// way it logs one line, and returns what it logged.
    pub async fn reload(&self) -> Result<(), TlsError> {
        let files = self.files.clone();
        let read = self.tracker.spawn_blocking(move || (files.stamp(), files.load())).await;
        let loaded = match read {
            Ok((stamp, loaded)) => {
                *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) = stamp;
                loaded
            }
            Err(panic) => Err(TlsError::file(
                "--tls-cert",
                &self.files.cert,
                Problem::Unreadable(std::io::Error::other(panic)),
            )),
        };
        match loaded {
            Ok(config) => {
                self.current.send_replace(config);
                tracing::info!("TLS certificate reloaded; new connections use it");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "TLS reload refused; the certificate in use stays");
                Err(error)
            }
        }
    }

    /// Looks every `period` whether a file was modified since the last load (Kubernetes updates
    /// a mounted Secret in place, and no one sends SIGHUP), and reloads if so. A refused reload
    /// is tried again once a file changes again. Ends when `stop` is cancelled.
    pub(crate) async fn watch(self, period: Duration, stop: CancellationToken) {
        let mut ticks = time::interval_at(time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let files = self.files.clone();
            let Ok(now) = self.tracker.spawn_blocking(move || files.stamp()).await else { continue };
            let changed = *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) != now;
            if changed {
                tracing::info!("a TLS file changed; reloading");
                let _ = self.reload().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_handshake_is_classed_by_rustls_s_error_and_anything_else_is_the_socket() {
        let rustls = |error: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, error);
        let cases = [
            (std::io::ErrorKind::UnexpectedEof.into(), HandshakeFailure::Closed),
            (std::io::ErrorKind::ConnectionReset.into(), HandshakeFailure::Closed),
            (rustls(rustls::Error::NoCertificatesPresented), HandshakeFailure::Certificate),
            (
                rustls(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)),
                HandshakeFailure::Certificate,
            ),
            (
                rustls(rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA)),
                HandshakeFailure::Certificate,
            ),
            (
                rustls(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)),
                HandshakeFailure::Protocol,
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(HandshakeFailure::of(&error), reason, "{error}");
        }
    }
}

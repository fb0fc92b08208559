//! The server's side of TLS: the certificate in use, its reload, and each connection's handshake
//! (on the HTTP front's port too, offering HTTP/2 by ALPN there).
//!
//! The config in use sits in a `watch` channel. Each handshake takes the config current at its
//! start, and a reload replaces it for the handshakes after; a connection keeps the certificate
//! it shook hands with for its whole life, as TLS wants (cert-manager renews well before expiry,
//! so old connections end in time anyway).
//!
//! A reload comes from SIGHUP, or from the watch: every `tls_watch_period` (a minute) it reads
//! the files and compares what they hold with what was last loaded. Kubernetes updates a
//! mounted Secret in place and sends no signal, and the distroless image has no `kill` to send
//! one with. The contents, not the modification times, since `cp -p`, secret syncers and
//! restores write a renewed pair with the old times.
//!
//! **No read can wedge the process.** Each read of the files runs on `spawn_blocking` under
//! `tls_read_timeout` (5 s), and only regular files are opened (see `tls/mod.rs`). A read past
//! its deadline cannot be stopped (its thread waits in the kernel), so it is not in the
//! service's `TaskTracker`, which shutdown waits for: [`Reads`] keeps its handle, at most
//! [`MAX_READS`] at once (past it, a reload is refused at once), and `main` stops the runtime
//! waiting for it at most 100 ms, saying so.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::{Problem, TlsError, certificates_in, key_refused, private_key_in, provider, read, roots_in};
use crate::config::Config;
use crate::log_throttle::LogThrottle;
use crate::stats::{HandshakeFailure, Stats};
use crate::telemetry::spans::{self, Traced};

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

/// Reads of the TLS files running at once, at most, stuck ones included: past it, a reload is
/// refused at once rather than start another thread that may never return.
pub(crate) const MAX_READS: usize = 4;

/// What each file held when read, or why it could not be read.
#[derive(Debug)]
struct Contents {
    cert: Result<Vec<u8>, TlsError>,
    key: Result<Vec<u8>, TlsError>,
    client_ca: Option<Result<Vec<u8>, TlsError>>,
}

/// What the files held, as far as it could be read: what the watch compares.
type Stamp = Vec<Option<Vec<u8>>>;

impl Contents {
    fn stamp(&self) -> Stamp {
        let held = |read: &Result<Vec<u8>, TlsError>| read.as_ref().ok().cloned();
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()].into_iter().flatten().map(held).collect()
    }
}

impl ServerFiles {
    /// Reads every file. Blocking: see the module docs.
    fn read(&self) -> Contents {
        Contents {
            cert: read("--tls-cert", &self.cert),
            key: read("--tls-key", &self.key),
            client_ca: self.client_ca.as_ref().map(|path| read("--tls-client-ca", path)),
        }
    }

    /// Checks what the files held and builds the config.
    fn load(&self, contents: Contents) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let chain = certificates_in("--tls-cert", &self.cert, &contents.cert?)?;
        let key = private_key_in("--tls-key", &self.key, &contents.key?)?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Provider)?;
        let builder = match (&self.client_ca, contents.client_ca) {
            (Some(path), Some(bytes)) => {
                let roots = roots_in("--tls-client-ca", path, &bytes?)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|error| TlsError::file("--tls-client-ca", path, Problem::Verifier(error)))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        // rustls checks that the key is the certificate's (`CertifiedKey::keys_match`).
        let config = builder.with_single_cert(chain, key).map_err(|error| key_refused(&self.key, error))?;
        Ok(Arc::new(config))
    }
}

/// Why the files could not be read in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    /// The read did not end within its deadline; it goes on, without us.
    #[error("reading the TLS files took longer than {0:?} (a stuck mount?)")]
    TimedOut(Duration),
    /// [`MAX_READS`] reads are running already.
    #[error("{MAX_READS} reads of the TLS files are still running")]
    TooMany,
    /// The read panicked.
    #[error("reading the TLS files failed")]
    Failed,
}

/// The blocking reads of the files, each under a deadline (see the module docs).
#[derive(Debug)]
pub(crate) struct Reads {
    timeout: Duration,
    running: Mutex<Vec<JoinHandle<()>>>,
}

impl Reads {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self { timeout, running: Mutex::default() }
    }

    /// Runs `read` on a blocking thread and waits for it at most the deadline. Dropping the
    /// future stops only the wait: the thread's handle stays here until it ends.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ReadError> {
        let (sender, result) = oneshot::channel();
        {
            let mut running = self.unfinished();
            if running.len() >= MAX_READS {
                return Err(ReadError::TooMany);
            }
            running.push(tokio::task::spawn_blocking(move || {
                let _ = sender.send(read());
            }));
        }
        match time::timeout(self.timeout, result).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_panicked)) => Err(ReadError::Failed),
            Err(_elapsed) => Err(ReadError::TimedOut(self.timeout)),
        }
    }

    /// Reads still running (stuck ones, at shutdown).
    pub(crate) fn running(&self) -> usize {
        self.unfinished().len()
    }

    /// The handles of the reads that have not ended, the others let go.
    fn unfinished(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.retain(|read| !read.is_finished());
        running
    }
}

/// TLS for the service port: the acceptor that each connection's task runs, and the reloader.
/// `None` without `--tls-cert` (plain TCP). Reads the files: blocking, see the module docs.
pub(crate) fn start(config: &Config, stats: Arc<Stats>) -> Result<Option<(Acceptor, Reloader)>, TlsError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let files = ServerFiles { cert: cert.clone(), key: key.clone(), client_ca: config.tls_client_ca.clone() };
    let contents = files.read();
    let stamp = contents.stamp();
    let (current, receiver) = watch::channel(files.load(contents)?);
    let acceptor = Acceptor {
        current: receiver,
        timeout: config.tls_handshake_timeout,
        stats,
        failures: Arc::new(Mutex::new(LogThrottle::every(FAILURES_LOG_PERIOD))),
        alpn: None,
    };
    let reads = Arc::new(Reads::new(config.tls_read_timeout));
    Ok(Some((
        acceptor,
        Reloader { files, current: Arc::new(current), reads, stamp: Arc::new(Mutex::new(stamp)) },
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
    /// The HTTP front's: the config in use, offering HTTP/2 and HTTP/1.1 by ALPN.
    alpn: Option<Arc<Alpn>>,
}

/// The config in use with ALPN's protocols for HTTP, made once per config (a reload makes the
/// next), not once per handshake. The line protocol's port offers none: it is no HTTP.
#[derive(Default)]
struct Alpn(Mutex<Option<(Arc<ServerConfig>, Arc<ServerConfig>)>>);

impl Alpn {
    /// `current`, offering `h2` and `http/1.1`.
    fn config(&self, current: Arc<ServerConfig>) -> Arc<ServerConfig> {
        let mut made = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((from, http)) = &*made
            && Arc::ptr_eq(from, &current)
        {
            return Arc::clone(http);
        }
        let mut http = ServerConfig::clone(&current);
        http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http = Arc::new(http);
        *made = Some((current, Arc::clone(&http)));
        http
    }
}

impl Acceptor {
    /// Shakes hands over `stream` with the config current now, within the handshake timeout. A
    /// connection still shaking hands when `drain` is cancelled has nothing in flight, so it is
    /// closed at once. With `traced`, the handshake is a span naming that peer.
    pub(crate) async fn accept<S>(
        &self,
        stream: S,
        drain: &CancellationToken,
        traced: Option<&Traced>,
    ) -> Handshake<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let span = traced.map(spans::handshake);
        let config = Arc::clone(&self.current.borrow());
        let config = match &self.alpn {
            Some(alpn) => alpn.config(config),
            None => config,
        };
        let acceptor = TlsAcceptor::from(config);
        let outcome = tokio::select! {
            biased;
            () = drain.cancelled() => return Handshake::Closed,
            outcome = time::timeout(self.timeout, acceptor.accept(stream)) => outcome,
        };
        let (reason, error) = match outcome {
            Ok(Ok(stream)) => {
                spans::end(span, None);
                return Handshake::Done(Box::new(stream));
            }
            Ok(Err(error)) => (HandshakeFailure::of(&error), error),
            Err(_elapsed) => (HandshakeFailure::Timeout, std::io::ErrorKind::TimedOut.into()),
        };
        spans::end(span, Some(reason.name()));
        self.stats.count_handshake_failure(reason);
        tracing::debug!(reason = reason.name(), %error, "TLS handshake failed");
        // A poisoned lock only means a panic elsewhere mid-count: the count is still usable.
        let report = self.failures.lock().unwrap_or_else(PoisonError::into_inner).record();
        if let Some(failed) = report {
            tracing::info!(failed, "TLS handshakes failed (RUST_LOG=debug names each)");
        }
        Handshake::Closed
    }

    /// The same handshake for the HTTP front: its certificate, reloads, timeout and counters,
    /// offering HTTP/2 and HTTP/1.1 by ALPN.
    #[cfg(feature = "http")]
    pub(crate) fn for_http(&self) -> Self {
        Self { alpn: Some(Arc::default()), ..self.clone() }
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
    /// The reads of the files, each under a deadline.
    reads: Arc<Reads>,
    /// What the files held when they were last read, by a load that took or not.
    stamp: Arc<Mutex<Stamp>>,
}

impl Reloader {
    /// Reads the files again (on `spawn_blocking`, within `tls_read_timeout`). If they are good,
    /// handshakes from now on use them, and open connections keep what they have; if not (or if
    /// the read does not end in time), the old ones stay in use. Either way it logs one line,
    /// and returns what it logged.
    pub async fn reload(&self) -> Result<(), TlsError> {
        let contents = match self.read().await {
            Ok(contents) => contents,
            Err(error) => {
                tracing::warn!(%error, "TLS reload refused; the certificate in use stays");
                let error = std::io::Error::other(error.to_string());
                return Err(TlsError::file("--tls-cert", &self.files.cert, Problem::Unreadable(error)));
            }
        };
        self.load(contents)
    }

    /// Reads every file on a blocking thread, within the deadline.
    async fn read(&self) -> Result<Contents, ReadError> {
        let files = self.files.clone();
        self.reads.run(move || files.read()).await
    }

    /// Loads what was read, and remembers it as the files' last contents.
    fn load(&self, contents: Contents) -> Result<(), TlsError> {
        *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) = contents.stamp();
        match self.files.load(contents) {
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

    /// Reads of the files that have not ended (stuck past their deadline, at shutdown).
    pub fn reads_running(&self) -> usize {
        self.reads.running()
    }

    /// Reads the files every `period` and reloads if what they hold changed since the last load
    /// (Kubernetes updates a mounted Secret in place, and no one sends SIGHUP). A refused reload
    /// is tried again once a file changes again. Ends when `stop` is cancelled, even mid-read.
    pub(crate) async fn watch(self, period: Duration, stop: CancellationToken) {
        let mut ticks = time::interval_at(time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let read = tokio::select! {
                () = stop.cancelled() => return,
                read = self.read() => read,
            };
            let contents = match read {
                Ok(contents) => contents,
                Err(error) => {
                    tracing::warn!(%error, "cannot look at the TLS files; trying again in {period:?}");
                    continue;
                }
            };
            let changed = *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) != contents.stamp();
            if changed {
                tracing::info!("a TLS file changed; reloading");
                let _ = self.load(contents);
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

    /// A read that never ends costs its wait, up to the deadline, and a thread; past
    /// [`MAX_READS`] of them, the next is refused at once; one that ends frees its place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_read_that_never_ends_is_given_up_at_its_deadline_and_bounded_in_number() {
        let reads = Reads::new(Duration::from_millis(50));
        assert_eq!(reads.run(|| 7).await, Ok(7));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        for _ in 0..MAX_READS {
            let held = Arc::clone(&held);
            let started = time::Instant::now();
            // A blocking thread that waits, as a read of a hung mount does.
            #[expect(clippy::disallowed_methods, reason = "the stuck read, on its blocking thread")]
            let stuck = reads.run(move || held.lock().map(|held| held.recv()).is_ok()).await;
            assert_eq!(stuck, Err(ReadError::TimedOut(Duration::from_millis(50))));
            assert!(started.elapsed() < Duration::from_secs(2), "given up at its deadline");
        }
        assert_eq!(reads.running(), MAX_READS);
        assert_eq!(reads.run(|| 7).await, Err(ReadError::TooMany), "no more threads for it");
        for _ in 0..MAX_READS {
            release.send(()).unwrap();
        }
        let deadline = time::Instant::now() + Duration::from_secs(10);
        while reads.running() > 0 {
            assert!(time::Instant::now() < deadline, "the reads ended");
            time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(reads.run(|| 8).await, Ok(8), "room again");
    }
}

//! The baseline: the fastest bare tokio line server we can write with the same framing and the
//! same flush batching as the service (read what is there, answer every complete line, one write
//! per read): no limits, no timeouts, no job queue, no metrics. It answers every line `OK PONG`
//! but `SLEEP <ms>`, answered `OK <ms>` after a tokio sleep; with [`INLINE_SPIN`], `SPIN <ms>`
//! spins on the runtime for that long first (the negative control: CPU work inline, never do
//! this).
//!
//! It runs in a process of its own: this bench's executable, started with [`BARE_SERVER`]. It
//! prints its address on stdout and serves until its stdin closes.
//!
//! [`BARE_SERVER`]: crate::peers::BARE_SERVER

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::bytes::BytesMut;

use crate::peers::INLINE_SPIN;

/// Serves until stdin closes.
pub(crate) fn main() {
    let inline_spin = std::env::args().any(|arg| arg == INLINE_SPIN);
    serve_until_stdin_closes(move |stream| serve(stream, inline_spin));
}

/// What every bare server does around its connections: binds a loopback port, prints its
/// address, serves each connection with `serve` until stdin closes. Runs on the default
/// multi-thread runtime, as the service does.
pub(crate) fn serve_until_stdin_closes<F>(serve: impl Fn(tokio::net::TcpStream) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let mut stdout = tokio::io::stdout();
        let addr = listener.local_addr().expect("an address");
        stdout.write_all(format!("{addr}\n").as_bytes()).await.expect("write the address");
        stdout.flush().await.expect("flush the address");
        let mut connections = JoinSet::new();
        let mut stdin = tokio::io::stdin();
        let mut byte = [0; 1];
        loop {
            tokio::select! {
                _ = stdin.read(&mut byte) => return,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    connections.spawn(serve(stream));
                }
                Some(_) = connections.join_next() => {}
            }
        }
    });
    // A connection may still be open; its task is dropped with the runtime.
    runtime.shutdown_background();
}

async fn serve(mut stream: tokio::net::TcpStream, inline_spin: bool) {
    stream.set_nodelay(true).expect("nodelay");
    let (mut input, mut output) = (BytesMut::with_capacity(8192), Vec::with_capacity(8192));
    while stream.read_buf(&mut input).await.is_ok_and(|read| read > 0) {
        while let Some(end) = input.iter().position(|&b| b == b'\n') {
            let line = input.split_to(end + 1);
            match line.strip_prefix(b"SPIN ").filter(|_| inline_spin) {
                Some(ms) => {
                    let ms = number(ms);
                    let until = Instant::now() + Duration::from_millis(ms);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    output.extend_from_slice(format!("OK {ms}\n").as_bytes());
                }
                None => match line.strip_prefix(b"SLEEP ") {
                    // The floor of the timer figure: a tokio sleep, inline (the connection's
                    // next line waits for it).
                    Some(ms) => {
                        let ms = number(ms);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        output.extend_from_slice(format!("OK {ms}\n").as_bytes());
                    }
                    None => output.extend_from_slice(b"OK PONG\n"),
                },
            }
        }
        if stream.write_all(&output).await.is_err() {
            return;
        }
        output.clear();
    }
}

/// The number after a command word (0 if it is none).
fn number(digits: &[u8]) -> u64 {
    std::str::from_utf8(digits).ok().and_then(|ms| ms.trim().parse().ok()).unwrap_or(0)
}

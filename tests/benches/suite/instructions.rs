//! Instructions per PING: the service and the bare tokio line server, each under callgrind
//! (`valgrind --tool=callgrind`, Debian's `valgrind`), loaded by this bench's client at depth 1
//! and 16. Callgrind counts the user-space instructions a process runs, not seconds, so these
//! figures do not move with the machine's load the way the throughput ratios do; the kernel's
//! share (a read and a write per burst, the same for both servers) is not in them. Each server
//! also runs once without load for as long, and that count (start, idle timers, shutdown) is
//! taken off. Valgrind runs a server about 50 times slower, so a few seconds of load give
//! thousands of answers. Without valgrind, the figures are skipped with one line. The TLS
//! figures count a full handshake the same way, with [`counts_dir`] and [`total`].

use std::path::Path;
use std::time::Duration;

use service::load::LoadPlan;
use tokio::process::Command;

use crate::{CONNECTIONS, Figure, Goal, SERVICE_FLAGS, load, peers, plan};

/// How long each count loads its server (or, for the unloaded count, waits).
const COUNTED_FOR: Duration = Duration::from_secs(5);

/// Instructions per PING at depth 1 and 16, beside the bare server's.
pub(crate) async fn figures(binary: &Path) -> Vec<Figure> {
    let Some(dir) = counts_dir("instructions_per_ping").await else { return Vec::new() };
    let service = per_ping(&dir, Some(binary)).await;
    let bare = per_ping(&dir, None).await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let row = "PING instructions / bare tokio, depth 1, 16";
    let names = ["instructions_per_ping_depth1", "instructions_per_ping_depth16"];
    names
        .into_iter()
        .zip(service.into_iter().zip(bare))
        .map(|(name, (service, bare))| {
            Figure::beside(name, row, service, "instructions", bare, Goal::AtMost(2.0))
        })
        .collect()
}

/// A fresh directory for callgrind's counts, if valgrind is installed; else `None`, and the
/// figure named is said to be skipped.
pub(crate) async fn counts_dir(figure: &str) -> Option<std::path::PathBuf> {
    if Command::new("valgrind").arg("--version").output().await.is_err() {
        println!("skipped {figure}: valgrind is not installed (apt-get install valgrind)");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("bench-callgrind-{}-{figure}", std::process::id()));
    tokio::fs::create_dir_all(&dir).await.expect("a directory for callgrind's counts");
    Some(dir)
}

/// The service's (`binary`) or else the bare server's instructions per PING at depth 1 and 16.
async fn per_ping(dir: &Path, binary: Option<&Path>) -> [f64; 2] {
    let idle = count(dir, binary, None).await.0;
    let mut figures = [0.0; 2];
    for (figure, depth) in figures.iter_mut().zip([1, 16]) {
        let (loaded, answers) = count(dir, binary, Some(depth)).await;
        assert!(answers > 0, "no answer at depth {depth} under callgrind");
        *figure = loaded.saturating_sub(idle) as f64 / answers as f64;
    }
    figures
}

/// Runs the server under callgrind, loaded at `depth` for [`COUNTED_FOR`] (or left alone as
/// long), stops it, and returns the instructions it ran and the answers it gave.
async fn count(dir: &Path, binary: Option<&Path>, depth: Option<usize>) -> (u64, u64) {
    let out = dir.join(format!("{}-{depth:?}.out", if binary.is_some() { "service" } else { "bare" }));
    let server = match binary {
        Some(binary) => peers::service_counted(binary, SERVICE_FLAGS, &out).await,
        None => peers::bare_counted(&out).await,
    };
    let answers = match depth {
        Some(depth) => {
            let report =
                load(&LoadPlan { duration: COUNTED_FOR, ..plan(server.addr, CONNECTIONS, depth, &["PING"]) })
                    .await;
            report.answers
        }
        None => {
            tokio::time::sleep(COUNTED_FOR).await;
            0
        }
    };
    server.stop().await;
    (total(&out).await, answers)
}

/// The instructions callgrind counted in `out`, written when its program ended.
pub(crate) async fn total(out: &Path) -> u64 {
    let text = tokio::fs::read_to_string(out).await.expect("callgrind wrote its count");
    text.lines()
        .find_map(|line| line.strip_prefix("summary:").or_else(|| line.strip_prefix("totals:")))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in {}", out.display()))
}

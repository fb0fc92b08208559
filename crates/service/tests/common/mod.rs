//! Helpers shared by the tests that run the real binary: finding a program the tests need,
//! signalling and waiting for the child, and reading where it listens from its log.

#![expect(
    clippy::disallowed_methods,
    reason = "sync helpers that signal and wait on child processes, never on a runtime"
)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The binary that cargo built for this package (the name follows a generated project's).
pub(crate) const BINARY: &str = env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME")));
/// The bound on any wait for the child.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// `program` from the PATH, if installed. Without it, the tests that need it say once per run
/// that they were skipped (naming the Debian `package`), and pass; under `CI=true` they fail,
/// so CI cannot skip them unseen.
pub(crate) fn required_program(program: &str, package: &str, tests: &str) -> Option<PathBuf> {
    static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true, but {program} is not installed (Debian: apt-get install {package})"
        );
        let mut skipped = SKIPPED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !skipped.iter().any(|name| name == program) {
            skipped.push(program.to_owned());
            // Written to stderr itself: the test harness keeps what `eprintln!` says to itself
            // when a test passes, and this must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "skipped the {tests}: {program} is not installed (Debian: apt-get install {package})"
            );
        }
    }
    found
}

/// Sends SIG`name` to the child.
pub(crate) fn signal(child: &Child, name: &str) {
    let sent =
        Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().expect("run kill");
    assert!(sent.success(), "kill -{name} {}", child.id());
}

/// Waits for the child to end, at most [`PATIENCE`]; kills it and fails the test otherwise.
pub(crate) fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not end within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads the text log until the "listening" line, and returns its address.
pub(crate) fn listening_addr(stderr: &mut impl std::io::Read) -> SocketAddr {
    let mut log = Vec::new();
    let mut byte = [0; 1];
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline && stderr.read(&mut byte).expect("read stderr") == 1 {
        log.push(byte[0]);
        let text = String::from_utf8_lossy(&log);
        if let Some(line) = text.lines().find(|line| line.contains("listening") && text.ends_with('\n')) {
            let addr = line.split("local_addr=").nth(1).and_then(|rest| rest.split_whitespace().next());
            return addr.and_then(|addr| addr.parse().ok()).unwrap_or_else(|| panic!("no address in {line}"));
        }
    }
    panic!("the server did not say where it listens:\n{}", String::from_utf8_lossy(&log));
}

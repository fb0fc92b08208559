//! The real binary, as an operator runs it: its exit status, its stderr, its signals.
//!
//! These tests start the binary that cargo built for this package (`CARGO_BIN_EXE_<name>`; the
//! name is the package's, so it follows a generated project's). They run on real time, reach only
//! loopback, and bound every wait. They are plain `#[test]`s: waiting on a child process blocks,
//! which is fine on a test thread and never done on a runtime.
#![cfg(unix)]
#![expect(
    clippy::disallowed_methods,
    reason = "sync tests that wait on child processes and sleep between polls; no async runtime here"
)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{BINARY, Log, PATIENCE, request, serve, serve_at, signal, start, wait};

fn terminate(child: &Child) {
    signal(child, "TERM");
}

/// Every extreme value of every `serve` flag is refused before anything starts: exit status 2
/// and one line on stderr that names the flag.
#[test]
fn every_serve_flag_refuses_its_extreme_value_with_one_line_and_status_2() {
    let command = service::cli::command();
    let definition = command.find_subcommand("serve").expect("a serve subcommand");
    let mut checked = 0;
    for arg in definition.get_arguments() {
        let Some(long) = arg.get_long().filter(|long| *long != "help") else { continue };
        let value_name = arg.get_value_names().and_then(|names| names.first()).map(|name| name.as_str());
        // The TLS files come in pairs, and each file that cannot be used is tested in tls.rs.
        if value_name == Some("PATH") {
            continue;
        }
        let extreme = match value_name {
            Some("N" | "BYTES") => "18446744073709551616",
            Some("DURATION") => "300000000000y",
            Some("ADDR") => "999.0.0.1:1",
            _ => "not-a-value",
        };
        let output = serve(&[&format!("--{long}"), extreme]).0.output().expect("run the binary");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "--{long} {extreme}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "--{long} {extreme}: one line, not:\n{stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(&format!("--{long}")), "{stderr}");
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} flags");
}

/// Start-then-SIGTERM, 200 times, at random moments of start-up: every run ends. Once the server
/// has said it listens, its handlers are installed and the exit is graceful (status 0); earlier, a
/// SIGTERM may end the process by the signal itself, which still ends it.
#[test]
fn two_hundred_rapid_start_then_sigterm_cycles_all_end() {
    let cycles_per_thread = 50;
    std::thread::scope(|scope| {
        for thread in 0..4 {
            scope.spawn(move || {
                for cycle in 0..cycles_per_thread {
                    // Ports of the kernel's choosing: 200 processes would race for picked ones.
                    let anywhere = SocketAddr::from(([127, 0, 0, 1], 0));
                    let mut child = serve_at(anywhere, anywhere, &[]).spawn().expect("start the binary");
                    std::thread::sleep(Duration::from_millis((thread * 7 + cycle * 3) % 40));
                    terminate(&child);
                    let status = wait(&mut child);
                    let mut stderr = String::new();
                    child.stderr.take().expect("piped").read_to_string(&mut stderr).expect("read stderr");
                    if stderr.contains("listening") {
                        assert_eq!(status.code(), Some(0), "a graceful exit once listening:\n{stderr}");
                    } else {
                        assert!(
                            status.code() == Some(0) || status.signal() == Some(15),
                            "{status:?}:\n{stderr}"
                        );
                    }
                }
            });
        }
    });
}

/// With stderr on a pipe that nobody reads, and debug logging on, the server still accepts and
/// answers: a full pipe drops log lines instead of blocking the runtime.
#[test]
fn a_server_whose_stderr_nobody_reads_still_accepts_and_answers() {
    let (mut command, addr, admin) = serve(&[]);
    let mut child = command.env("RUST_LOG", "debug").spawn().expect("start the binary");
    // Its stderr is never read.
    crate::common::wait_until_ready(&mut child, admin).expect("the server starts");
    // Each connection logs two debug lines: 20,000 lines, about 2 MB, are far more than a pipe
    // holds (64 KiB on Linux) and than the log queue keeps (16,384 lines), so lines are dropped.
    for _ in 0..10_000 {
        let mut stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
        stream.write_all(b"PING\nQUIT\n").expect("send");
    }
    // Should the last connections hold every slot for a moment (`ERR busy`), retry.
    let deadline = Instant::now() + PATIENCE;
    let answer = loop {
        let answer = request(addr, "PING");
        if answer != "ERR busy\n" || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(answer, "OK PONG\n");
    terminate(&child);
    assert_eq!(wait(&mut child).code(), Some(0));
}

/// SIGHUP (a closed terminal, a supervisor's "reload"), SIGUSR1, SIGUSR2 and SIGALRM end a
/// process that has no handler for them, at once and without a word. The service logs each and
/// goes on serving; SIGTERM still stops it gracefully.
#[test]
fn stray_signals_are_logged_and_the_service_goes_on() {
    let (mut child, addr, _) = start(&[]);
    let log = Log::of(&mut child);
    for name in ["HUP", "USR1", "USR2", "ALRM"] {
        signal(&child, name);
        assert_eq!(request(addr, "PING"), "OK PONG\n", "serving after SIG{name}");
    }
    terminate(&child);
    assert_eq!(wait(&mut child).code(), Some(0));
    let log = log.rest();
    for (name, said) in [
        ("SIGHUP", "nothing to reload"),
        ("SIGUSR1", "ignored"),
        ("SIGUSR2", "ignored"),
        ("SIGALRM", "ignored"),
    ] {
        let field = format!("signal=\"{name}\"");
        assert!(
            log.lines().any(|line| line.contains(said) && line.contains(&field)),
            "no {name} line in:\n{log}"
        );
    }
}

/// `--backlog` reaches the kernel: `ss` shows a listening socket's backlog as its Send-Q.
#[cfg(target_os = "linux")]
#[test]
fn the_listen_backlog_is_the_one_asked_for() {
    let (mut child, addr, _) = start(&["--backlog", "77"]);
    let ss = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("run ss (iproute2) to read the listen backlog");
    let line = String::from_utf8_lossy(&ss.stdout).into_owned();
    let send_q = line.split_whitespace().nth(2).unwrap_or_else(|| panic!("no listening socket in: {line:?}"));
    assert_eq!(send_q, "77", "{line}");
    terminate(&child);
    assert_eq!(wait(&mut child).code(), Some(0));
}

/// `call` on a terminal shows another peer's bidi overrides and zero-width characters escaped, and writes them byte for
/// byte into a pipe. `script` (util-linux) gives the child a pseudo-terminal for stdout.
#[cfg(target_os = "linux")]
#[test]
fn call_escapes_what_could_act_on_a_terminal_and_pipes_bytes_as_they_are() {
    let (mut child, addr, _) = start(&[]);
    // PUBLISH refuses control characters; bidi overrides and zero-width characters are text,
    // and can still reorder or hide what a terminal shows.
    let hostile = "\u{202e}gpj.exe\u{200b}";
    // Subscribes, prints the answer and one pushed line, and ends: what a terminal would show.
    let subscriber = |on_terminal: bool| {
        let mut command = if on_terminal {
            let mut script = Command::new("script");
            script.args(["-qec", r#""$BINARY" call --addr "$ADDR" --count 1 SUBSCRIBE t"#, "/dev/null"]);
            script
        } else {
            let mut call = Command::new(BINARY);
            call.args(["call", "--addr", &addr.to_string(), "--count", "1", "SUBSCRIBE", "t"]);
            call
        };
        let child = command
            .env("BINARY", BINARY)
            .env("ADDR", addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run call (under script, from util-linux, for a pseudo-terminal)");
        // Publish until the subscriber is reached (OK 1): it prints that message and ends.
        let deadline = Instant::now() + PATIENCE;
        while request(addr, &format!("PUBLISH t {hostile}")) != "OK 1\n" {
            assert!(Instant::now() < deadline, "the subscriber never subscribed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = child.wait_with_output().expect("call ends after one pushed line");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let shown = subscriber(true);
    assert!(shown.contains(r"MSG t \u{202e}gpj.exe\u{200b}"), "{shown:?}");
    assert!(!shown.contains('\u{202e}'), "a raw override reached the terminal: {shown:?}");
    let piped = subscriber(false);
    assert_eq!(piped, format!("OK 1\nMSG t {hostile}\n"), "a pipe gets the bytes");
    terminate(&child);
    assert_eq!(wait(&mut child).code(), Some(0));
}

/// Every connection has TCP keepalive, so a subscriber that vanished without a FIN is found:
/// `ss -o` shows the kernel's keepalive timer on the server's end of a connection.
#[cfg(target_os = "linux")]
#[test]
fn every_connection_has_the_keepalive_asked_for() {
    let (mut child, addr, _) = start(&["--keepalive", "42s"]);
    let client = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    assert_eq!(request(addr, "PING"), "OK PONG\n", "the server has accepted");
    let ss = Command::new("ss")
        .args(["-tnoH", "state", "established", &format!("sport = :{}", addr.port())])
        .output()
        .expect("run ss (iproute2) to read the keepalive timer");
    let lines = String::from_utf8_lossy(&ss.stdout).into_owned();
    assert!(!lines.trim().is_empty(), "no connection on the server's port");
    // `timer:(keepalive,41sec,0)`: counting down from the 42 s asked for.
    for line in lines.lines() {
        let timer = line.split("timer:(keepalive,").nth(1).unwrap_or_else(|| panic!("no keepalive: {line}"));
        let seconds: u64 =
            timer.split("sec").next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line}"));
        assert!((30..=42).contains(&seconds), "{line}");
    }
    drop(client);
    terminate(&child);
    assert_eq!(wait(&mut child).code(), Some(0));
}

//! TLS as an operator runs it: the real binary with `--tls-cert`, its refusals of files it cannot
//! use, its reload on SIGHUP, and `openssl s_client` (Debian's `openssl`), a client nobody here
//! wrote. Without `openssl` that test says once that it was skipped; under `CI=true` it fails.
#![cfg(unix)]
#![expect(
    clippy::disallowed_methods,
    reason = "tests that start and wait on child processes, with a runtime of their own for the clients"
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use service::Client;
use service::tls::ClientTls;
use testkit::pki::{Identity, Pki};

use crate::common::{BINARY, Log, PATIENCE, serve, signal, start, wait};

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// A TLS server of `pki`'s certificate (mutual TLS with `mutual`), its address, and its log.
fn start_tls(pki: &Pki, mutual: bool) -> (Child, SocketAddr, Log) {
    let mut args = vec!["--tls-cert", path(&pki.server.cert), "--tls-key", path(&pki.server.key)];
    if mutual {
        args.extend(["--tls-client-ca", path(&pki.ca_cert)]);
    }
    let (mut child, addr, _) = start(&args);
    let log = Log::of(&mut child);
    (child, addr, log)
}

type TlsClient = Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A TLS client of the server at `addr`, and the certificate the server showed it (DER).
async fn connect(addr: SocketAddr, tls: &ClientTls) -> (TlsClient, Vec<u8>) {
    let client =
        Client::connect_tls(&addr.to_string(), tls, PATIENCE, PATIENCE).await.expect("connect over TLS");
    let connection = client.get_ref().expect("open").get_ref().1;
    let shown = connection.peer_certificates().expect("a server certificate")[0].to_vec();
    (client, shown)
}

/// Each TLS flag with a file it cannot use: a missing one, a directory, one that is not PEM, and
/// a key that is not the certificate's. Each is refused before serving: status 2, one line that
/// names the flag.
#[test]
fn every_tls_flag_refuses_a_file_it_cannot_use_with_one_line_and_status_2() {
    let pki = Pki::new();
    let not_pem = pki.path("not.pem");
    std::fs::write(&not_pem, "hello, not a certificate\n").expect("write");
    let missing = pki.path("missing.pem");
    let directory = pki.path("");
    let (cert, key) = (path(&pki.server.cert), path(&pki.server.key));
    let mut cases = Vec::new();
    for bad in [path(&missing), path(&directory), path(&not_pem)] {
        cases.push(("--tls-cert", vec!["--tls-cert", bad, "--tls-key", key]));
        cases.push(("--tls-key", vec!["--tls-cert", cert, "--tls-key", bad]));
        cases.push(("--tls-client-ca", vec!["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", bad]));
    }
    cases.push(("--tls-key", vec!["--tls-cert", cert, "--tls-key", path(&pki.client.key)]));
    cases.push(("--tls-key", vec!["--tls-cert", cert]));
    for (flag, args) in cases {
        let output = serve(&args).0.output().expect("run the binary");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line, got {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(flag), "{args:?}: {stderr}");
    }
}

/// SIGHUP reads the files again: new connections see the renewed certificate and an open
/// connection keeps working; a broken file is refused with one log line, and the certificate in
/// use stays.
#[test]
fn sighup_reloads_the_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    let pki = Pki::new();
    let (mut child, addr, log) = start_tls(&pki, false);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let tls = pki.client_tls(None);
    let (mut old, shown) = runtime.block_on(connect(addr, &tls));
    assert_eq!(shown, pki.server.der, "the certificate of --tls-cert");

    let renewed = pki.renew_server();
    signal(&child, "HUP");
    log.wait_for("TLS certificate reloaded");
    let (_, shown) = runtime.block_on(connect(addr, &tls));
    assert_eq!(shown, renewed, "a new connection sees the renewed certificate");
    assert_eq!(runtime.block_on(old.request("PING")).expect("the old connection works"), "OK PONG");

    std::fs::write(&pki.server.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("write");
    signal(&child, "HUP");
    let refused = log.wait_for("TLS reload refused");
    assert!(refused.contains("--tls-cert"), "the line names the flag: {refused}");
    let (mut new, shown) = runtime.block_on(connect(addr, &tls));
    assert_eq!(shown, renewed, "the certificate in use stays");
    assert_eq!(runtime.block_on(new.request("PING")).expect("served"), "OK PONG");

    signal(&child, "TERM");
    assert_eq!(wait(&mut child).code(), Some(0));
}

/// A reload can never wedge the process: a FIFO where the certificate was (as a stuck mount
/// behaves: a read that never returns) is refused at once, the next SIGHUP with good files
/// reloads, and SIGTERM right after a SIGHUP still shuts down gracefully, at once.
#[test]
fn a_reload_of_a_file_that_would_never_be_read_is_refused_and_delays_nothing() {
    let pki = Pki::new();
    let (mut child, addr, log) = start_tls(&pki, false);
    let fifo = pki.path("fifo.pem");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo (coreutils)");
    assert!(made.success(), "mkfifo");
    let good = pki.path("good.pem");
    std::fs::rename(&pki.server.cert, &good).expect("move the certificate aside");
    std::fs::rename(&fifo, &pki.server.cert).expect("a FIFO in its place");
    signal(&child, "HUP");
    let refused = log.wait_for("TLS reload refused");
    assert!(refused.contains("--tls-cert") && refused.contains("not a regular file"), "{refused}");
    // The FIFO goes; the renewed pair is taken on the next SIGHUP.
    std::fs::remove_file(&pki.server.cert).expect("remove the FIFO");
    std::fs::rename(&good, &pki.server.cert).expect("the certificate back");
    let renewed = pki.renew_server();
    signal(&child, "HUP");
    log.wait_for("TLS certificate reloaded");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let (_, shown) = runtime.block_on(connect(addr, &pki.client_tls(None)));
    assert_eq!(shown, renewed, "a later reload was not blocked");
    std::fs::remove_file(&pki.server.cert).expect("remove the certificate");
    let made = Command::new("mkfifo").arg(&pki.server.cert).status().expect("run mkfifo");
    assert!(made.success(), "mkfifo");
    let started = std::time::Instant::now();
    signal(&child, "HUP");
    signal(&child, "TERM");
    assert_eq!(wait(&mut child).code(), Some(0), "a graceful shutdown");
    println!("stopped {:?} after SIGHUP and SIGTERM with a FIFO for a certificate", started.elapsed());
}

/// `openssl s_client` sends PING and reads OK PONG, with a client certificate under mutual TLS,
/// and gets no answer without one, or with one the server must refuse.
#[test]
fn openssl_s_client_talks_to_the_service_and_needs_a_certificate_under_mutual_tls() {
    let Some(openssl) = crate::common::required_program(
        "openssl",
        "Debian: apt-get install openssl",
        "openssl s_client test",
    ) else {
        return;
    };
    let pki = Pki::new();
    let (mut child, addr, _log) = start_tls(&pki, true);
    let s_client = |identity: Option<&Identity>| {
        let mut command = Command::new(&openssl);
        command
            .args(["s_client", "-quiet", "-verify_return_error", "-connect", &addr.to_string()])
            .args(["-CAfile", path(&pki.ca_cert)]);
        if let Some(identity) = identity {
            command.args(["-cert", path(&identity.cert), "-key", path(&identity.key)]);
        }
        let mut client = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl");
        client.stdin.as_mut().expect("piped").write_all(b"PING\n").expect("send PING");
        // Read on a thread, so the wait for the answer is bounded.
        let stdout = BufReader::new(client.stdout.take().expect("piped"));
        let (lines, answers) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let answer = answers.recv_timeout(PATIENCE).ok();
        // `-quiet` keeps s_client open after its stdin ends: stop it here.
        let _ = client.kill();
        let _ = client.wait();
        let _ = reader.join();
        answer
    };
    assert_eq!(s_client(Some(&pki.client)).as_deref(), Some("OK PONG"));
    assert_eq!(s_client(None), None, "no answer without a client certificate");
    assert_eq!(s_client(Some(&pki.stranger)), None, "no answer to a certificate of another CA");
    assert_eq!(s_client(Some(&pki.expired)), None, "no answer to an expired certificate");
    signal(&child, "TERM");
    assert_eq!(wait(&mut child).code(), Some(0));
}

/// `call` and `load` speak TLS with `--tls`: trusting `--tls-ca`, presenting `--tls-cert` and
/// `--tls-key` to a server that asks for them. Without a certificate, `call` gets no answer
/// (status 3); with a CA file it cannot read, it sends nothing (status 2).
#[test]
fn call_and_load_speak_tls_and_present_a_client_certificate() {
    let pki = Pki::new();
    let (mut child, addr, _log) = start_tls(&pki, true);
    let addr = addr.to_string();
    let client = |command: &str, identity: Option<&Identity>, rest: &[&str]| {
        let mut line = Command::new(BINARY);
        line.args([command, "--addr", &addr, "--tls", "--tls-ca", path(&pki.ca_cert)]);
        if let Some(identity) = identity {
            line.args(["--tls-cert", path(&identity.cert), "--tls-key", path(&identity.key)]);
        }
        let output = line.args(rest).stdin(Stdio::null()).output().expect("run the binary");
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    assert_eq!(client("call", Some(&pki.client), &["PING"]), (Some(0), "OK PONG\n".to_owned()));
    let (status, answer) = client("call", None, &["PING"]);
    assert_eq!((status, answer.as_str()), (Some(3), ""), "no answer without a certificate");
    let (status, report) =
        client("load", Some(&pki.client), &["--duration", "200ms", "--connections", "2", "PING"]);
    assert_eq!(status, Some(0), "{report}");
    let missing = pki.path("missing.pem");
    let output = Command::new(BINARY)
        .args(["call", "--addr", &addr, "--tls", "--tls-ca", path(&missing), "PING"])
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a CA file it cannot read is a usage error: {stderr}");
    assert!(stderr.starts_with("error: --tls-ca ") && stderr.lines().count() == 1, "{stderr}");
    signal(&child, "TERM");
    assert_eq!(wait(&mut child).code(), Some(0));
}

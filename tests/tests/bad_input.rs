//! Bad input: arbitrary bytes never panic the server, never hang it, and each line gets exactly
//! one answer line, or the connection closes for a reason it states.
//!
//! A property test (proptest) sends random mixes of well-formed requests, garbage, invalid
//! UTF-8 and over-long lines, cut into random pieces, through the real connection handler over
//! `duplex`, on one paused `current_thread` runtime shared by all cases (the service is started
//! once).

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use service::Config;
use service::protocol::ErrorCode;
use testkit::{Harness, test_config};

const MAX_LINE: usize = 64;

/// One request line, without its newline: mostly plausible, sometimes hostile.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..2 * MAX_LINE),
        2 => prop::sample::select(plausible_lines()).prop_map(|line| line.as_bytes().to_vec()),
        1 => "[ -~]{0,80}".prop_map(String::into_bytes),
        1 => Just(vec![0xc3, 0x28]),
    ]
}

/// Every example request of the registry, and a few near misses.
fn plausible_lines() -> Vec<&'static str> {
    let examples =
        service::commands::REGISTRY.iter().flat_map(|spec| spec.examples.iter().map(|(request, _)| *request));
    examples.chain(["STATS", "quit", "NOPE", "", " ", "PING\r", "PING\t", "\u{e9}t\u{e9}"]).collect()
}

fn is_well_formed(answer: &str) -> bool {
    answer == "OK"
        || answer.starts_with("OK ")
        || answer.strip_prefix("ERR ").is_some_and(|rest| {
            ErrorCode::ALL.iter().any(|code| rest.split(' ').next() == Some(code.as_str()))
        })
}

#[test]
fn arbitrary_lines_each_get_one_answer_or_a_stated_close() {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let harness = {
        let _inside = runtime.enter();
        Harness::start(&Config {
            max_line: testkit::count(MAX_LINE),
            idle_timeout: Duration::from_secs(5),
            ..test_config()
        })
    };
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(
            &(prop::collection::vec(line(), 1..20), prop::collection::vec(1..64usize, 1..8)),
            |(lines, cuts)| {
                let answers = runtime.block_on(async {
                    let mut peer = harness.connect();
                    let mut input = lines.join(&b'\n');
                    input.push(b'\n');
                    // Sent in pieces of the chosen sizes (the last piece takes the rest), so lines
                    // arrive split across reads. The server may close early (QUIT, a long line)
                    // while we still write: fine.
                    let mut rest = &input[..];
                    for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                        let (piece, tail) = rest.split_at((*cut).min(rest.len()));
                        if peer.send(piece).await.is_err() {
                            break;
                        }
                        tokio::task::yield_now().await;
                        rest = tail;
                    }
                    // EOF: a subscribed connection is never idle, so the server closes when it
                    // has answered everything, not at the idle timeout.
                    let _ = peer.finish().await;
                    let mut answers = Vec::new();
                    while let Some(answer) = peer.answer().await {
                        // A line may subscribe the connection and a later one publish to it:
                        // pushed lines are not answers.
                        if !service::protocol::is_push(&answer) {
                            answers.push(answer);
                        }
                    }
                    answers
                });
                prop_assert!(answers.len() <= lines.len(), "more answers than lines: {answers:?}");
                for (i, answer) in answers.iter().enumerate() {
                    prop_assert!(is_well_formed(answer), "malformed answer {answer:?}");
                    // One `\r` before the newline is part of the line ending, not of the line.
                    let line = lines[i].strip_suffix(b"\r").unwrap_or(&lines[i]);
                    if line.len() > MAX_LINE {
                        prop_assert!(
                            answer.starts_with("ERR line-too-long"),
                            "line {i} is too long: {answer:?}"
                        );
                    } else if std::str::from_utf8(line).is_err() {
                        prop_assert_eq!(answer.as_str(), "ERR bad-request not UTF-8");
                    }
                }
                if answers.len() < lines.len() {
                    // Closed early: only for QUIT or a line over the limit, which was the last answer.
                    let last = answers.last().map(String::as_str).unwrap_or_default();
                    prop_assert!(
                        last == "OK BYE" || last.starts_with("ERR line-too-long"),
                        "closed after {last:?}"
                    );
                } else {
                    let last = answers.last().map(String::as_str);
                    prop_assert!(answers.len() == lines.len(), "{last:?}");
                }
                Ok(())
            },
        )
        .unwrap();
    runtime.block_on(harness.stop());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn bad_lines_get_one_line_errors_and_the_connection_goes_on() {
    let harness = Harness::start(&Config { max_line: testkit::count(MAX_LINE), ..test_config() });
    let mut peer = harness.connect();
    for (request, expected) in [
        (&b"\xff\xfe\xfd"[..], "ERR bad-request not UTF-8"),
        (b"", "ERR unknown-command empty request"),
        (b"WAIT", "ERR bad-argument WAIT takes a number from 0 to 60000"),
        (b"WAIT 1e3", "ERR bad-argument WAIT takes a number from 0 to 60000"),
        (b"SPIN 18446744073709551616", "ERR bad-argument SPIN takes a number from 0 to 60000"),
        (b"STATS now", "ERR bad-argument STATS takes no argument"),
        (b"WAIT +5", "ERR bad-argument WAIT takes a number from 0 to 60000"),
        (b"\x00\x01", r"ERR unknown-command \u{0}\u{1}"),
        (b"\x1b[2J", r"ERR unknown-command \u{1b}[2J"),
        (b"PING", "OK PONG"),
    ] {
        peer.send(request).await.unwrap();
        peer.send(b"\r\n").await.unwrap();
        assert_eq!(
            peer.answer().await.as_deref(),
            Some(expected),
            "answer to {:?}",
            String::from_utf8_lossy(request)
        );
    }
    harness.stop().await;
}

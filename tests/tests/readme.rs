//! The README is held to the code: its flag table to `serve --help` (names, environment
//! variables, defaults, and bounds tried at both edges; a part's flags only in a build with
//! it), its benchmark table to the recorded report, and its size to 10 KB. (Its table of
//! HTTP statuses is held to the front's, in the service crate.)
//!
//! The protocol table is not checked against the command registry here: adding or removing a
//! command is one file and its registry lines, and the tests must pass before its row is written.

use clap::FromArgMatches as _;
use service::cli::{Cli, command};

const README: &str = include_str!("../../README.md");

/// The rows of the table under `## {heading}`, each split into its trimmed cells.
fn table(heading: &str) -> Vec<Vec<&'static str>> {
    let section =
        README.split(&format!("\n## {heading}\n")).nth(1).unwrap_or_else(|| panic!("no {heading} section"));
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter(|line| line.starts_with('|') && !line.starts_with("|--"))
        .skip(1) // the header
        .map(|line| line.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect()
}

/// The rows of the flag table whose flags this build has. The raw repository's README lists
/// every part's flags, and a build without a part does not offer them: TLS's (`--tls-*`,
/// `--fanout-ca`) without the `tls` feature, the relay's (`--fanout-*`) without `redis`, the
/// HTTP front's (`--http-*`) without `http`. (A generated project's README lists only its own.)
fn flag_rows() -> Vec<Vec<&'static str>> {
    let offered = |flag: &str| {
        let tls = flag.starts_with("--tls-") || flag == "--fanout-ca";
        let redis = flag.starts_with("--fanout-");
        let http = flag.starts_with("--http-");
        !(tls && cfg!(not(feature = "tls"))
            || redis && cfg!(not(feature = "redis"))
            || http && cfg!(not(feature = "http")))
    };
    let mut rows = table("Configure");
    rows.retain(|row| offered(code(row[0])));
    rows
}

/// The text inside the first pair of backticks.
fn code(cell: &str) -> &str {
    cell.split('`').nth(1).unwrap_or_else(|| panic!("no `code` in {cell:?}"))
}

fn serve_accepts(flag: &str, value: &str) -> bool {
    command()
        .try_get_matches_from(["service", "serve", flag, value])
        .and_then(|matches| Cli::from_arg_matches(&matches))
        .is_ok()
}

#[test]
fn the_flag_table_matches_serve_help() {
    let command = command();
    let serve = command.find_subcommand("serve").expect("a serve subcommand");
    let flags: Vec<_> =
        serve.get_arguments().filter(|arg| arg.get_long().is_some_and(|long| long != "help")).collect();
    let rows = flag_rows();
    let listed: Vec<&str> = rows.iter().map(|row| code(row[0])).collect();
    let defined: Vec<String> =
        flags.iter().map(|arg| format!("--{}", arg.get_long().unwrap_or_default())).collect();
    assert_eq!(listed, defined, "the README lists the flags of `serve --help`, in its order");
    // One sentence gives every variable's name: the prefix, then the flag in upper case.
    let prefix = service::cli::env_prefix();
    assert!(
        README.contains(&format!("`{prefix}` and the flag in upper case")),
        "the README names the prefix {prefix}"
    );
    for (row, arg) in rows.iter().zip(&flags) {
        let long = arg.get_long().unwrap_or_default();
        let env = arg.get_env().and_then(|env| env.to_str()).unwrap_or_default();
        assert_eq!(env, format!("{prefix}{}", long.to_uppercase().replace('-', "_")), "--{long}");
        let default: Vec<_> = arg.get_default_values().iter().filter_map(|value| value.to_str()).collect();
        if default.is_empty() {
            assert_eq!(row[1], "none", "{} has no default", row[0]);
        } else {
            assert_eq!(vec![code(row[1])], default, "default of {}", row[0]);
        }
    }
}

#[test]
fn the_bounds_in_the_flag_table_are_the_bounds_the_flags_enforce() {
    let mut checked = 0;
    for row in flag_rows() {
        let flag = code(row[0]);
        let Some((low, high)) =
            row[2].strip_prefix('`').and_then(|cell| cell.trim_end_matches('`').split_once("..="))
        else {
            continue;
        };
        let (below, above) = match (low.parse::<u64>(), high.parse::<u64>()) {
            (Ok(low), Ok(high)) => {
                (low.checked_sub(1).map(|below| below.to_string()), (high + 1).to_string())
            }
            // Durations: one millisecond past either end.
            _ => ((low != "0s").then(|| "0s".to_owned()), format!("{high} 1ms")),
        };
        assert!(serve_accepts(flag, low), "{flag} {low} is within the README's bounds");
        assert!(serve_accepts(flag, high), "{flag} {high} is within the README's bounds");
        assert!(!serve_accepts(flag, &above), "{flag} {above} is past the README's bounds");
        if let Some(below) = below {
            assert!(!serve_accepts(flag, &below), "{flag} {below} is below the README's bounds");
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} bounded flags in the README");
}

#[test]
fn the_readme_is_at_most_10_kb() {
    assert!(README.len() <= 10 * 1024, "README.md is {} bytes", README.len());
}

#[test]
fn the_bench_table_is_the_one_made_from_the_recorded_report() {
    let report = include_str!("../benches/report.json");
    let report: serde_json::Value = serde_json::from_str(report).expect("the recorded report is JSON");
    // The rows of the parts this project has (the answers in its Cargo.toml).
    let parts = testkit::bench_report::Parts::Of(include_str!("../../Cargo.toml"));
    let table = testkit::bench_report::table(&report, parts).expect("the recorded report makes a table");
    let rewritten = testkit::bench_report::with_table(README, &table).expect("the README has a bench table");
    assert!(
        rewritten == README,
        "the README's bench table is not the recorded report's: run `cargo bench -p NAME-tests -- --record`"
    );
}

/// The table of instructions per PING per release holds this release's row (the template's
/// version in `Cargo.toml`) made from the recorded report: `-- --record` writes it.
#[test]
fn this_releases_row_of_instructions_is_the_one_made_from_the_recorded_report() {
    let page = include_str!("../benches/instructions.md");
    let report = include_str!("../benches/report.json");
    let report: serde_json::Value = serde_json::from_str(report).expect("the recorded report is JSON");
    let release = testkit::bench_report::template_version(include_str!("../../Cargo.toml"))
        .expect("the template's version in Cargo.toml");
    let row =
        testkit::bench_report::release_row(&report, release).expect("the recorded report has the counts");
    let rewritten =
        testkit::bench_report::with_release_row(page, &row).expect("the page has a table of releases");
    assert!(
        rewritten == page,
        "the row of instructions for {release} is not the recorded report's: run `cargo bench -p NAME-tests -- --record`"
    );
}

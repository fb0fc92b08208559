//! The benchmark report and the README's table, which is made from it so that the two cannot
//! drift.
//!
//! `cargo bench -p NAME-tests` writes the report to `target/bench-report.json`; then
//! `cargo bench -p NAME-tests -- --record` keeps it as [`RECORDED`] and writes the table into
//! `README.md` (and its twin) between [`BEGIN`] and [`END`], measuring nothing. A test
//! (`tests/readme.rs`) checks that the README holds the table made from the recorded report.
//! `--record` also writes the row of this release (the template's version) into the table of
//! instructions per PING per release, [`RELEASES`] ([`release_row`]), which keeps the rows of
//! earlier releases so that a regression shows in a diff; the same test checks it.
//!
//! The report is one JSON object: `machine`, `date`, and `figures`, a list of objects each with
//! `name`, `row` (its line in the table), `value`, `unit`, `baseline`, `ratio`, `goal` (text, or
//! null for a figure to watch) and `met` (true, false, or null for a figure to watch).
//!
//! The figures of an optional part ([`part`]) are in the table only where the project has that
//! part (the answers in the workspace's `Cargo.toml`, [`has_part`]); in the template's README
//! twin, each such row is under its part's condition.

use serde_json::Value;

/// Where the recorded report is kept, from the workspace's root.
pub const RECORDED: &str = "tests/benches/report.json";
/// The line before the table in the README.
pub const BEGIN: &str = "<!-- made by `cargo bench -p NAME-tests -- --record`: do not edit -->";
/// The line after it.
pub const END: &str = "<!-- end of the bench table -->";

/// A figure's number as the table shows it, in its unit: a ratio as it is, a latency in ms, a
/// size in KiB, a rate in thousands or millions a second, millions of instructions with an M.
pub fn display(number: f64, unit: &str) -> String {
    match unit {
        "ms" => format!("{number:.1} ms"),
        "us" => format!("{number:.0} us"),
        "bytes" => format!("{:.1} KiB", number / 1024.0),
        "hs/s" => format!("{:.1}k/s", number / 1e3),
        "req/s" | "msg/s" => format!("{:.2}M/s", number / 1e6),
        "instructions" if number >= 1e6 => format!("{:.2}M", number / 1e6),
        _ if number >= 100.0 => format!("{number:.0}"),
        _ if number >= 10.0 => format!("{number:.1}"),
        _ => format!("{number:.2}"),
    }
}

/// A goal's bound in the unit [`display`] shows: `16 KiB`, `2 ms`, `0.9`.
pub fn bound(number: f64, unit: &str) -> String {
    match unit {
        "ms" => format!("{number} ms"),
        "bytes" => format!("{} KiB", number / 1024.0),
        _ => format!("{number}"),
    }
}

/// The number a figure's goal bounds, and its unit: its ratio to the baseline where it has one,
/// or else its value.
pub fn shown(ratio: Option<f64>, value: f64, unit: &str) -> (f64, &str) {
    ratio.map_or((value, unit), |ratio| (ratio, "x"))
}

/// The optional part a figure measures, if any: its rows are left out of the table of a project
/// without it. One place, by the figures' names.
pub fn part(name: &str) -> Option<&'static str> {
    [("tls_", "tls"), ("fanout_two_replicas", "redis"), ("trace_", "otel"), ("http_", "http")]
        .into_iter()
        .find_map(|(prefix, part)| name.starts_with(prefix).then_some(part))
}

/// Whether the project whose workspace manifest is `manifest` has the optional part `part`: its
/// answer in `[workspace.metadata.template]` (`tls = "true"`).
pub fn has_part(manifest: &str, part: &str) -> bool {
    template_table(manifest).lines().any(|line| line == format!("{part} = \"true\""))
}

/// The template's version the project whose workspace manifest is `manifest` was rendered from
/// (`version` in `[workspace.metadata.template]`): the release a row of instructions is for.
pub fn template_version(manifest: &str) -> Option<&str> {
    template_table(manifest).lines().find_map(|line| line.strip_prefix("version = \"")?.strip_suffix('"'))
}

/// The lines of `[workspace.metadata.template]` in `manifest`.
fn template_table(manifest: &str) -> &str {
    let table = manifest.split("\n[workspace.metadata.template]\n").nth(1).unwrap_or_default();
    table.split("\n[").next().unwrap_or_default()
}

/// A Liquid tag's delimiters, for the README twin's conditions: written apart, so that no Rust
/// source holds a Liquid tag (a generated project is checked for any left unrendered).
const OPEN: &str = concat!("{", "%");
const CLOSE: &str = concat!("%", "}");

/// A line of the table: its label, its figures' numbers, their goals (each once) and whether
/// each figure met its goal.
type Row = (String, Option<&'static str>, Vec<String>, Vec<String>, Vec<Option<bool>>);

/// Which rows a table shows: those of the parts a project has, or (for the template's README
/// twin) every row, each of a part under that part's Liquid condition.
#[derive(Debug, Clone, Copy)]
pub enum Parts<'a> {
    /// The parts whose answers `manifest` (a workspace `Cargo.toml`) gives as "true".
    Of(&'a str),
    /// Every row, conditioned for the twin.
    Conditioned,
}

/// The README's table: a heading line naming the machine and the date, then one line a `row`,
/// in the report's order, its figures' numbers joined by commas (a count of instructions with
/// its ratio); a part's rows as `parts` says.
pub fn table(report: &Value, parts: Parts<'_>) -> Result<String, String> {
    let text = |value: &Value, what: &str| value.as_str().map(str::to_owned).ok_or(format!("no {what}"));
    let machine = text(&report["machine"], "machine")?;
    let date = text(&report["date"], "date")?;
    let figures = report["figures"].as_array().ok_or("no figures")?;
    let mut rows: Vec<Row> = Vec::new();
    for figure in figures {
        let name = text(&figure["name"], "figure name")?;
        let row = text(&figure["row"], &format!("row for {name}"))?;
        let value = figure["value"].as_f64().ok_or(format!("no value for {name}"))?;
        let unit = text(&figure["unit"], &format!("unit for {name}"))?;
        let (number, shown_unit) = shown(figure["ratio"].as_f64(), value, &unit);
        let mut number = display(number, shown_unit);
        // A count of instructions shows beside its ratio: the goal bounds the ratio, and the
        // count is what a profile is compared with.
        if unit == "instructions" && figure["ratio"].is_number() {
            number = format!("{number} ({value:.0})");
        }
        let goal = figure["goal"].as_str().unwrap_or("watch").to_owned();
        let met = figure["met"].as_bool();
        let part = part(&name);
        match rows.iter_mut().find(|(existing, ..)| *existing == row) {
            Some((_, of, numbers, goals, mets)) => {
                if *of != part {
                    return Err(format!("{name} shares its row with figures of another part"));
                }
                numbers.push(number);
                if !goals.contains(&goal) {
                    goals.push(goal);
                }
                mets.push(met);
            }
            None => rows.push((row, part, vec![number], vec![goal], vec![met])),
        }
    }
    let mut table = format!(
        "On {machine}, {date}, 50 connections:\n\n| figure | measured | goal | met |\n|---|---|---|---|\n"
    );
    for (row, part, numbers, goals, mets) in rows {
        let met = if mets.iter().all(Option::is_none) {
            "-"
        } else if mets.iter().all(|met| *met != Some(false)) {
            "yes"
        } else {
            "**no**"
        };
        let line = format!("| {row} | {} | {} | {met} |\n", numbers.join(", "), goals.join(", "));
        match (part, parts) {
            (None, _) => table.push_str(&line),
            (Some(part), Parts::Of(manifest)) if has_part(manifest, part) => table.push_str(&line),
            (Some(_), Parts::Of(_)) => {}
            (Some(part), Parts::Conditioned) => {
                table.push_str(&format!("{OPEN} if {part} == \"true\" {CLOSE}{line}{OPEN} endif {CLOSE}"));
            }
        }
    }
    Ok(table)
}

/// `readme` with `table` between [`BEGIN`] and [`END`] in place of what was there.
pub fn with_table(readme: &str, table: &str) -> Result<String, String> {
    let (start, end) = between(readme, BEGIN, END, "bench table")?;
    Ok(format!("{}\n{table}{}", &readme[..start], &readme[end..]))
}

/// Where the text between the lines `begin` and `end` of `text` starts and ends (`what` names
/// it in the error).
fn between(text: &str, begin: &str, end: &str, what: &str) -> Result<(usize, usize), String> {
    let start = text.find(begin).ok_or(format!("no {what}'s first line"))? + begin.len();
    let stop = text[start..].find(end).ok_or(format!("no {what}'s last line"))? + start;
    Ok((start, stop))
}

/// The table of instructions per PING per release, from the workspace's root.
pub const RELEASES: &str = "tests/benches/instructions.md";
/// The line before its rows.
pub const RELEASES_BEGIN: &str = "<!-- instructions per release: `-- --record` writes this version's row -->";
/// The line after it.
pub const RELEASES_END: &str = "<!-- end of the instructions per release -->";

/// The row of `version` in the table of instructions per release: the service's and the bare
/// server's instructions per PING at depth 1 and 16, from `report`, and its date. `None` if the
/// report has no counts (valgrind was not installed).
pub fn release_row(report: &Value, version: &str) -> Option<String> {
    let count = |name: &str, field: &str| -> Option<String> {
        let figures = report["figures"].as_array()?;
        let figure = figures.iter().find(|figure| figure["name"] == name)?;
        figure[field].as_f64().map(thousands)
    };
    let (depth1, depth16) = ("instructions_per_ping_depth1", "instructions_per_ping_depth16");
    let date = report["date"].as_str()?;
    Some(format!(
        "| {version} | {} | {} | {} | {} | {date} |",
        count(depth1, "value")?,
        count(depth16, "value")?,
        count(depth1, "baseline")?,
        count(depth16, "baseline")?,
    ))
}

/// `page` with `row` in its table of releases (between [`RELEASES_BEGIN`] and [`RELEASES_END`]):
/// in place of the row of the same version, or else after the last row, so that the rows of
/// earlier releases stay and a regression shows in a diff.
pub fn with_release_row(page: &str, row: &str) -> Result<String, String> {
    let (start, end) = between(page, RELEASES_BEGIN, RELEASES_END, "release table")?;
    let key = |line: &str| line.split('|').nth(1).map(str::trim).map(str::to_owned);
    let mut lines: Vec<&str> = page[start..end].lines().filter(|line| !line.is_empty()).collect();
    match lines.iter().position(|line| key(line) == key(row)) {
        Some(index) => lines[index] = row,
        None => lines.push(row),
    }
    Ok(format!("{}\n{}\n{}", &page[..start], lines.join("\n"), &page[end..]))
}

/// `1234.6` as `1,235`.
fn thousands(number: f64) -> String {
    let digits = format!("{number:.0}");
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_row_replaces_its_versions_row_and_keeps_the_others() {
        let figure = |name: &str, value: f64, baseline: f64| serde_json::json!({ "name": name, "value": value, "baseline": baseline });
        let report = serde_json::json!({
            "date": "2026-12-07",
            "figures": [
                figure("instructions_per_ping_depth1", 3087.4, 1775.0),
                figure("instructions_per_ping_depth16", 547.0, 280.2),
            ],
        });
        let row = release_row(&report, "0.4.0").expect("the report has counts");
        assert_eq!(row, "| 0.4.0 | 3,087 | 547 | 1,775 | 280 | 2026-12-07 |");
        let header = "| release | depth 1 | depth 16 | bare, depth 1 | bare, depth 16 | date |\n|---|---|---|---|---|---|";
        let page = format!(
            "text\n{RELEASES_BEGIN}\n{header}\n| 0.3.0 | 5,172 | 1,092 | 1,796 | 280 | 2026-01-01 |\n| 0.4.0 | 1 | 1 | 1 | 1 | 2026-12-01 |\n{RELEASES_END}\nmore\n"
        );
        let written = with_release_row(&page, &row).expect("the page has the table");
        assert!(
            written.contains(&format!(
                "| 0.3.0 | 5,172 | 1,092 | 1,796 | 280 | 2026-01-01 |\n{row}\n{RELEASES_END}\nmore\n"
            )),
            "{written}"
        );
        assert_eq!(
            with_release_row(&written, &row).as_deref(),
            Ok(written.as_str()),
            "recording twice changes nothing"
        );
        let next = row.replace("0.4.0", "0.5.0");
        let appended = with_release_row(&written, &next).expect("the page has the table");
        assert!(appended.contains(&format!("{row}\n{next}\n{RELEASES_END}")), "{appended}");
        assert_eq!(release_row(&serde_json::json!({"date": "2026-12-07", "figures": []}), "0.4.0"), None);
        let manifest = "[workspace]\nmembers = []\n\n[workspace.metadata.template]\nversion = \"0.4.0\"\nname = \"x\"\n\n[workspace.dependencies]\nversion = \"9\"\n";
        assert_eq!(template_version(manifest), Some("0.4.0"));
    }

    #[test]
    fn a_row_shows_each_figures_ratio_an_instruction_count_beside_its_ratio_and_one_alone_in_millions() {
        let figure = |name: &str, row: &str, value: f64, unit: &str, ratio: f64, met: bool| {
            serde_json::json!({
                "name": name, "row": row, "value": value, "unit": unit, "baseline": value / ratio,
                "ratio": ratio, "goal": "<= 2", "met": met,
            })
        };
        let report = serde_json::json!({
            "machine": "2 x CPU", "date": "2026-12-07",
            "figures": [
                figure("instructions_per_ping_depth1", "PING instructions", 3189.0, "instructions", 1.8, true),
                figure("instructions_per_ping_depth16", "PING instructions", 674.0, "instructions", 2.41, false),
                figure("throughput", "PING / bare", 1e5, "req/s", 0.99, true),
                serde_json::json!({
                    "name": "instructions_per_handshake", "row": "handshakes", "value": 2_345_678.0,
                    "unit": "instructions", "baseline": null, "ratio": null, "goal": null, "met": null,
                }),
            ],
        });
        let table = table(&report, Parts::Conditioned).expect("a table");
        let rows: Vec<&str> = table.lines().skip(4).collect();
        assert_eq!(
            rows,
            [
                "| PING instructions | 1.80 (3189), 2.41 (674) | <= 2 | **no** |",
                "| PING / bare | 0.99 | <= 2 | yes |",
                "| handshakes | 2.35M | watch | - |",
            ]
        );
    }
}

//! The benchmark report and the README's table, which is made from it so that the two cannot
//! drift.
//!
//! `cargo bench -p NAME-tests` writes the report to `target/bench-report.json`; then
//! `cargo bench -p NAME-tests -- --record` keeps it as [`RECORDED`] and writes the table into
//! `README.md` (and its twin) between [`BEGIN`] and [`END`], measuring nothing. A test
//! (`tests/readme.rs`) checks that the README holds the table made from the recorded report.
//!
//! The report is one JSON object: `machine`, `date`, and `figures`, a list of objects each with
//! `name`, `row` (its line in the table), `value`, `unit`, `baseline`, `ratio`, `goal` (text, or
//! null for a figure to watch) and `met` (true, false, or null for a figure to watch).

use serde_json::Value;

/// Where the recorded report is kept, from the workspace's root.
pub const RECORDED: &str = "tests/benches/report.json";
/// The line before the table in the README.
pub const BEGIN: &str = "<!-- made by `cargo bench -p NAME-tests -- --record`: do not edit -->";
/// The line after it.
pub const END: &str = "<!-- end of the bench table -->";

/// A figure's number as the table shows it, in its unit: a ratio as it is, a latency in ms, a
/// size in KiB, a rate in thousands or millions a second.
pub fn display(number: f64, unit: &str) -> String {
    match unit {
        "ms" => format!("{number:.1} ms"),
        "us" => format!("{number:.0} us"),
        "bytes" => format!("{:.1} KiB", number / 1024.0),
        "hs/s" => format!("{:.1}k/s", number / 1e3),
        "req/s" | "msg/s" => format!("{:.2}M/s", number / 1e6),
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

/// A line of the table: its label, its figures' numbers, their goals (each once) and whether
/// each figure met its goal.
type Row = (String, Vec<String>, Vec<String>, Vec<Option<bool>>);

/// The README's table: a heading line naming the machine and the date, then one line a `row`,
/// in the report's order, its figures' numbers joined by commas.
pub fn table(report: &Value) -> Result<String, String> {
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
        let (number, unit) = shown(figure["ratio"].as_f64(), value, &unit);
        let goal = figure["goal"].as_str().unwrap_or("watch").to_owned();
        let met = figure["met"].as_bool();
        match rows.iter_mut().find(|(existing, ..)| *existing == row) {
            Some((_, numbers, goals, mets)) => {
                numbers.push(display(number, unit));
                if !goals.contains(&goal) {
                    goals.push(goal);
                }
                mets.push(met);
            }
            None => rows.push((row, vec![display(number, unit)], vec![goal], vec![met])),
        }
    }
    let mut table = format!(
        "On {machine}, {date}, 50 connections:\n\n| figure | measured | goal | met |\n|---|---|---|---|\n"
    );
    for (row, numbers, goals, mets) in rows {
        let met = if mets.iter().all(Option::is_none) {
            "-"
        } else if mets.iter().all(|met| *met != Some(false)) {
            "yes"
        } else {
            "**no**"
        };
        table.push_str(&format!("| {row} | {} | {} | {met} |\n", numbers.join(", "), goals.join(", ")));
    }
    Ok(table)
}

/// `readme` with `table` between [`BEGIN`] and [`END`] in place of what was there.
pub fn with_table(readme: &str, table: &str) -> Result<String, String> {
    let start = readme.find(BEGIN).ok_or("no bench table's first line")? + BEGIN.len();
    let end = readme[start..].find(END).ok_or("no bench table's last line")? + start;
    Ok(format!("{}\n{table}{}", &readme[..start], &readme[end..]))
}

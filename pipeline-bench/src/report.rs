//! The ratio table (markdown), `RESULTS.md` sections and the SVG chart.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::work::Res;

/// How a row's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A ratio, printed `0.62x`.
    Ratio,
    /// Milliseconds.
    Ms,
}

/// What a row must reach (judged on the median).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    AtLeast(f64),
    AtMost(f64),
    Within(f64, f64),
    /// For contrast only.
    Info,
}

impl Target {
    fn text(self, unit: Unit) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {}", fmt(t, unit)),
            Target::AtMost(t) => format!("<= {}", fmt(t, unit)),
            Target::Within(lo, hi) => format!("{}..{}", fmt(lo, unit), fmt(hi, unit)),
            Target::Info => "(contrast)".into(),
        }
    }

    fn met(self, v: f64) -> Option<bool> {
        match self {
            Target::AtLeast(t) => Some(v >= t),
            Target::AtMost(t) => Some(v <= t),
            Target::Within(lo, hi) => Some(lo <= v && v <= hi),
            Target::Info => None,
        }
    }

    fn reference(self) -> Option<f64> {
        match self {
            Target::AtLeast(t) | Target::AtMost(t) => Some(t),
            Target::Within(lo, hi) => Some((lo * hi).sqrt()),
            Target::Info => None,
        }
    }
}

/// One line of the table: a measure over rounds.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) workload: String,
    pub(crate) measure: String,
    pub(crate) unit: Unit,
    pub(crate) values: Vec<f64>,
    pub(crate) target: Target,
    /// Printed instead of values when there are none.
    pub(crate) pending: Option<String>,
}

impl Row {
    pub(crate) fn new(
        workload: impl Into<String>,
        measure: impl Into<String>,
        unit: Unit,
        values: Vec<f64>,
        target: Target,
    ) -> Row {
        Row {
            workload: workload.into(),
            measure: measure.into(),
            unit,
            values,
            target,
            pending: None,
        }
    }

    fn stats(&self) -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = self
            .values
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some((v[0], median, v[v.len() - 1]))
    }
}

fn fmt(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Ratio if v >= 10.0 => format!("{v:.1}x"),
        Unit::Ratio => format!("{v:.2}x"),
        Unit::Ms if v >= 10.0 => format!("{v:.1} ms"),
        Unit::Ms => format!("{v:.3} ms"),
    }
}

/// The median of some values (NaN if none).
pub(crate) fn median(values: &[f64]) -> f64 {
    Row::new("", "", Unit::Ratio, values.to_vec(), Target::Info)
        .stats()
        .map_or(f64::NAN, |s| s.1)
}

/// The markdown table of `rows`.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| workload | measure | min | median | max | target | met |\n");
    s.push_str("|---|---|---:|---:|---:|---|---|\n");
    for row in rows {
        let target = row.target.text(row.unit);
        match (row.stats(), &row.pending) {
            (Some((min, med, max)), _) => {
                let met = match row.target.met(med) {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "-",
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    row.workload,
                    row.measure,
                    fmt(min, row.unit),
                    fmt(med, row.unit),
                    fmt(max, row.unit),
                    target,
                    met
                );
            }
            (None, pending) => {
                let why = pending.as_deref().unwrap_or("not run");
                let _ = writeln!(
                    s,
                    "| {} | {} | {why} | | | {target} | - |",
                    row.workload, row.measure
                );
            }
        }
    }
    s
}

/// Date, machine and commit, as a markdown list.
pub(crate) fn provenance(command: &str) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let commit =
        run_text("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let rustc = run_text("rustc", &["--version"]).unwrap_or_else(|| "unknown".into());
    let built = std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| m.modified())
        .map_or_else(|_| "unknown".into(), utc);
    format!(
        "- date: {} (UTC), binary built {built} (UTC)\n- machine: nproc = {nproc}, CPU model: {model}\n\
         - git commit: {commit} at the start of the run (the working tree may carry uncommitted \
         changes)\n- toolchain: {rustc}\n- command: `{command}`\n",
        utc(SystemTime::now())
    )
}

fn run_text(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `YYYY-MM-DD HH:MM` in UTC.
fn utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}")
}

/// Replaces the text between `<!-- BEGIN name -->` and `<!-- END name -->` in `path`
/// (appending the section if it is missing), keeping everything else as it was.
pub(crate) fn update_section(path: &Path, name: &str, content: &str) -> Res<()> {
    let begin = format!(
        "<!-- BEGIN {name} (generated by pipeline-bench; edits inside are overwritten) -->"
    );
    let end = format!("<!-- END {name} -->");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# pipeline-bench results\n".into());
    let block = format!("{begin}\n{}\n{end}", content.trim_end());
    let begin_key = format!("<!-- BEGIN {name} ");
    let new = match (old.find(&begin_key), old.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &old[..b], &old[e + end.len()..])
        }
        _ => format!("{}\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

/// A horizontal bar chart of the ratio rows on a log axis: bar from 1x to the median,
/// whisker from min to max, the target as a dark tick. Hand-written SVG.
pub(crate) fn svg(rows: &[Row], title: &str) -> String {
    let rows: Vec<(&Row, (f64, f64, f64))> = rows
        .iter()
        .filter(|r| r.unit == Unit::Ratio)
        .filter_map(|r| r.stats().map(|s| (r, s)))
        .filter(|(_, s)| s.0 > 0.0)
        .collect();
    let longest = rows
        .iter()
        .map(|(r, _)| r.workload.chars().count() + r.measure.chars().count() + 2)
        .max()
        .unwrap_or(0);
    // About 6.5 px per character at 12 px sans-serif.
    let label_w = (longest as f64 * 6.5 + 16.0).max(300.0);
    let (plot_w, value_w, row_h, top, bottom) = (520.0, 110.0, 26.0, 56.0, 40.0);
    let mut lo = 1.0f64;
    let mut hi = 1.0f64;
    for (row, (min, _, max)) in &rows {
        lo = lo.min(*min);
        hi = hi.max(*max);
        if let Some(t) = row.target.reference() {
            lo = lo.min(t);
            hi = hi.max(t);
        }
    }
    let (lo, hi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |v: f64| label_w + (v.max(1e-9).log10() - lo) / (hi - lo) * plot_w;
    let width = label_w + plot_w + value_w;
    let height = top + row_h * rows.len() as f64 + bottom;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"##,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="38" fill="#555">bar: median ratio (from 1x), whisker: min..max over rounds, black tick: target; log scale</text>"##
    );
    // Decade grid lines, 1x in bold.
    let mut d = lo;
    while d <= hi + 1e-9 {
        let v = 10f64.powf(d);
        let xv = x(v);
        let (w, c) = if d.abs() < 1e-9 {
            (1.5, "#444")
        } else {
            (0.5, "#bbb")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{xv:.1}" y1="{top}" x2="{xv:.1}" y2="{:.1}" stroke="{c}" stroke-width="{w}"/>"##,
            height - bottom
        );
        let _ = writeln!(
            s,
            r##"<text x="{xv:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}x</text>"##,
            height - bottom + 16.0,
            trim_num(v)
        );
        d += 1.0;
    }
    for (i, (row, (min, med, max))) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let mid = y + row_h / 2.0;
        let label = format!("{}: {}", row.workload, row.measure);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            label_w - 8.0,
            mid + 4.0,
            esc(&label)
        );
        let colour = match row.target.met(*med) {
            Some(true) => "#4c9a5b",
            Some(false) => "#c8553d",
            None => "#8a8f98",
        };
        let (a, b) = (x(1.0).min(x(*med)), x(1.0).max(x(*med)));
        let _ = writeln!(
            s,
            r##"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/>"##,
            y + 5.0,
            (b - a).max(1.0),
            row_h - 10.0
        );
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="black" stroke-width="1.2"/>"##,
            x(*min),
            x(*max)
        );
        for v in [min, max] {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="black"/>"##,
                x(*v),
                mid - 4.0,
                mid + 4.0
            );
        }
        if let Some(t) = row.target.reference() {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="black" stroke-width="3"/>"##,
                x(t),
                y + 2.0,
                y + row_h - 2.0
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}">{} ({})</text>"##,
            label_w + plot_w + 8.0,
            mid + 4.0,
            esc(&fmt(*med, Unit::Ratio)),
            esc(&row.target.text(Unit::Ratio))
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The ratio rows of a markdown table written by [`table`] (min, median and max become
/// the row's values), to redraw the chart from `RESULTS.md`.
pub(crate) fn parse_table(markdown: &str) -> Vec<Row> {
    let ratio = |cell: &str| {
        cell.trim()
            .strip_suffix('x')
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let mut rows = Vec::new();
    for line in markdown.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let [workload, measure, min, med, max, target, _met] = cells[..] else {
            continue;
        };
        let (Some(min), Some(med), Some(max)) = (ratio(min), ratio(med), ratio(max)) else {
            continue;
        };
        let target = if let Some(t) = target.strip_prefix(">=").and_then(ratio) {
            Target::AtLeast(t)
        } else if let Some(t) = target.strip_prefix("<=").and_then(ratio) {
            Target::AtMost(t)
        } else if let Some((lo, hi)) = target.split_once("..") {
            match (ratio(lo), ratio(hi)) {
                (Some(lo), Some(hi)) => Target::Within(lo, hi),
                _ => Target::Info,
            }
        } else {
            Target::Info
        };
        rows.push(Row::new(
            workload,
            measure,
            Unit::Ratio,
            vec![min, med, max],
            target,
        ));
    }
    rows
}

fn trim_num(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_owned()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_svg_render() {
        let rows = vec![
            Row::new(
                "map4 u64",
                "map4 / B-batch",
                Unit::Ratio,
                vec![0.5, 0.7, 0.6],
                Target::AtLeast(0.6),
            ),
            Row::new(
                "latency",
                "p99 @ 50%",
                Unit::Ms,
                vec![0.2, 0.3],
                Target::AtMost(1.0),
            ),
            Row {
                pending: Some("pending".into()),
                ..Row::new("macro", "x", Unit::Ratio, vec![], Target::Info)
            },
        ];
        let t = table(&rows);
        assert!(
            t.contains("| map4 u64 | map4 / B-batch | 0.50x | 0.60x | 0.70x | >= 0.60x | yes |")
        );
        assert!(t.contains("| 0.200 ms | 0.250 ms | 0.300 ms |"));
        assert!(t.contains("pending"));
        let svg = svg(&rows, "t");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        let back = parse_table(&t);
        assert_eq!(back.len(), 1, "only the ratio rows with values come back");
        assert_eq!(back[0].values, vec![0.5, 0.6, 0.7]);
        assert_eq!(back[0].target, Target::AtLeast(0.6));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn sections_are_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("pipeline-bench-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("R.md");
        let _ = std::fs::write(&path, "# title\n\nnotes\n");
        assert!(update_section(&path, "a", "one").is_ok());
        assert!(update_section(&path, "b", "two").is_ok());
        assert!(update_section(&path, "a", "three").is_ok());
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.starts_with("# title\n\nnotes\n"));
        assert!(text.contains("three") && text.contains("two") && !text.contains("one"));
        assert!(text.find("three") < text.find("two"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Instruction counts: each variant runs on a `current_thread` runtime under
//! `valgrind --tool=callgrind` at N and 2N items, in its own process (this binary
//! re-executed with the hidden `__count` subcommand); the figure is the marginal
//! instructions per item, (Ir(2N) - Ir(N)) / N, which cancels start-up and tear-down.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::work::{self, Res, Ty, V};

/// The hidden `__count VARIANT TYPE N` subcommand: one run on a `current_thread` runtime.
pub(crate) fn child(v: V, ty: Ty, n: u64) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tally = rt.block_on(work::run(v, ty, n)?)?;
    std::hint::black_box(tally);
    Ok(())
}

/// Total instructions (Ir) of one `__count` run under callgrind.
pub(crate) fn instructions(v: V, ty: Ty, n: u64, scratch: &Path) -> Res<u64> {
    let exe = crate::child_exe()?;
    let out_file: PathBuf = scratch.join(format!("callgrind.{}.{}.{n}.out", v.name(), ty.name()));
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .args(["__count", v.name(), ty.name(), &n.to_string()])
        .output()
        .map_err(|e| format!("cannot start valgrind (is it installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "callgrind run of {} {} {n} failed ({}): {}",
            v.name(),
            ty.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = std::fs::read_to_string(&out_file)?;
    let _ = std::fs::remove_file(&out_file);
    parse_total(&text)
        .ok_or_else(|| format!("no `totals:` or `summary:` line in {}", out_file.display()).into())
}

/// The Ir total of a callgrind output file: its `totals:` line, else its `summary:` line.
pub(crate) fn parse_total(text: &str) -> Option<u64> {
    let find = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    find("totals:").or_else(|| find("summary:"))
}

#[cfg(test)]
mod tests {
    use super::parse_total;

    #[test]
    fn parses_totals_then_summary() {
        let file = "events: Ir\nsummary: 1234\nfn=main\n10 5\ntotals: 1240\n";
        assert_eq!(parse_total(file), Some(1240));
        assert_eq!(parse_total("events: Ir\nsummary: 99\n"), Some(99));
        assert_eq!(parse_total("events: Ir\n"), None);
    }
}

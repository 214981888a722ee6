//! `pipeline-bench`: runs every workload of `BENCHMARKS.md` against baselines written by
//! hand in this crate (same runtime, same item type), interleaved round by round, and
//! prints one markdown table of ratios; `pipeline-bench callgrind` prints instructions
//! per item. See `README.md` beside this crate's `Cargo.toml`.
//!
//! ```text
//! pipeline-bench [--quick | --smoke] [--rounds N] [--only LIST] [--no-write]
//! pipeline-bench callgrind [--quick | --smoke] [--no-write]
//! ```

mod callgrind;
mod latency;
mod memory;
mod report;
mod work;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use report::{Row, Target, Unit};
use work::{Res, Tally, Ty, V};

const USAGE: &str = "\
pipeline-bench: the workloads of BENCHMARKS.md as ratios to hand-written baselines

USAGE:
    pipeline-bench [--quick | --smoke] [--rounds N] [--only LIST] [--no-write]
    pipeline-bench callgrind [--quick | --smoke] [--no-write]
    pipeline-bench redraw

    --quick       shorter runs (~0.25 s each instead of >= 1 s)
    --smoke       tiny fixed sizes, 2 rounds: checks that everything runs (CI); writes nothing
    --rounds N    interleaved rounds (default 5)
    --only LIST   comma-separated subset of: map4,string,io,cpu,latency,memory
    --no-write    do not update pipeline-bench/RESULTS.md and ratios.svg

    callgrind     instructions per item under valgrind on a current_thread runtime:
                  (Ir(2N) - Ir(N)) / N for map4, map4-sync, map4-guarded, map4-macro,
                  map4-hand, B-batch-sync, B-batch and B-fused
    redraw        redraw ratios.svg from the ratio table in RESULTS.md
";

/// The chart's title.
const CHART_TITLE: &str = "pipeline-core against hand-written baselines (same run)";

/// How long and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Quick,
    Smoke,
}

#[derive(Debug)]
struct Opts {
    mode: Mode,
    rounds: usize,
    only: Option<Vec<String>>,
    write: bool,
    command: String,
}

impl Opts {
    fn wants(&self, what: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|w| w == what))
    }

    /// The least duration of one timed run.
    fn target(&self) -> Duration {
        match self.mode {
            Mode::Full => Duration::from_millis(1000),
            Mode::Quick => Duration::from_millis(250),
            Mode::Smoke => Duration::ZERO,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = dispatch(&args) {
        eprintln!("pipeline-bench: {e}");
        std::process::exit(1);
    }
}

fn dispatch(args: &[String]) -> Res<()> {
    let num = |s: Option<&String>| -> Res<u64> { Ok(s.ok_or("missing item count")?.parse()?) };
    match args.first().map(String::as_str) {
        // Hidden: one slow-sink run in this process, for its peak RSS.
        Some("__rss") => memory::child(args.get(1).map_or("", |s| s.as_str()), num(args.get(2))?),
        // Hidden: one run on a current_thread runtime, for callgrind.
        Some("__count") => {
            let v = args
                .get(1)
                .and_then(|s| V::parse(s))
                .ok_or("unknown variant")?;
            let ty = args
                .get(2)
                .and_then(|s| Ty::parse(s))
                .ok_or("unknown item type")?;
            callgrind::child(v, ty, num(args.get(3))?)
        }
        // Redraws ratios.svg from the ratio table in RESULTS.md (after a hand edit).
        Some("redraw") => {
            let dir = results_dir();
            let text = std::fs::read_to_string(dir.join("RESULTS.md"))?;
            let section = text
                .split("<!-- BEGIN ratios ")
                .nth(1)
                .and_then(|s| s.split("<!-- END ratios -->").next())
                .ok_or("no ratios section in RESULTS.md")?;
            let rows = report::parse_table(section);
            std::fs::write(dir.join("ratios.svg"), report::svg(&rows, CHART_TITLE))?;
            eprintln!(
                "redrew {} rows into {}",
                rows.len(),
                dir.join("ratios.svg").display()
            );
            Ok(())
        }
        Some("-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("callgrind") => {
            // Copy the executable for the children now, before a concurrent build can
            // replace it.
            child_exe()?;
            let result = instruction_counts(&parse(&args[1..], "pipeline-bench callgrind")?);
            remove_child_exe();
            result
        }
        _ => {
            child_exe()?;
            let result = ratios(&parse(args, "pipeline-bench")?);
            remove_child_exe();
            result
        }
    }
}

fn parse(args: &[String], cmd: &str) -> Res<Opts> {
    let mut opts = Opts {
        mode: Mode::Full,
        rounds: 5,
        only: None,
        write: true,
        command: std::iter::once(cmd.to_owned())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
    };
    let mut rounds = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => opts.mode = Mode::Quick,
            "--smoke" => opts.mode = Mode::Smoke,
            "--no-write" => opts.write = false,
            "--rounds" => rounds = Some(it.next().ok_or("--rounds needs a number")?.parse()?),
            "--only" => {
                let list = it.next().ok_or("--only needs a list")?;
                opts.only = Some(list.split(',').map(str::to_owned).collect());
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}").into()),
        }
    }
    if opts.mode == Mode::Smoke {
        opts.write = false;
        opts.rounds = 2;
    }
    if let Some(r) = rounds {
        opts.rounds = usize::max(r, 1);
    }
    Ok(opts)
}

/// A private copy of this executable for the child processes (`__rss`, `__count`): a
/// `cargo build` running meanwhile may replace or delete `target/release/pipeline-bench`.
pub(crate) fn child_exe() -> Res<PathBuf> {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(path) = COPY.get() {
        return Ok(path.clone());
    }
    let dir = std::env::temp_dir().join(format!("pipeline-bench-exe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("pipeline-bench");
    std::fs::copy(std::env::current_exe()?, &path)?;
    Ok(COPY.get_or_init(|| path).clone())
}

/// Removes the copy made by [`child_exe`], if any.
fn remove_child_exe() {
    let dir = std::env::temp_dir().join(format!("pipeline-bench-exe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(dir);
}

/// The multi-thread runtime of the throughput workloads: 2 workers.
pub(crate) fn multi_thread() -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// One run of `v`, timed from before its first task is spawned to its sink's end.
fn timed(rt: &tokio::runtime::Runtime, v: V, ty: Ty, n: u64) -> Res<(Duration, Tally)> {
    let fut = work::run(v, ty, n)?;
    rt.block_on(async move {
        let start = Instant::now();
        let tally = tokio::spawn(fut).await??;
        Ok((start.elapsed(), tally))
    })
}

/// Items for one run of at least `opts.target()`, from a quick measurement.
fn calibrate(rt: &tokio::runtime::Runtime, v: V, ty: Ty, start: u64, opts: &Opts) -> Res<u64> {
    if opts.mode == Mode::Smoke {
        return Ok(start);
    }
    let target = opts.target().as_secs_f64();
    let mut n = start;
    loop {
        let (d, _) = timed(rt, v, ty, n)?;
        let d = d.as_secs_f64();
        if d >= target / 8.0 || n >= 1 << 36 {
            let rate = n as f64 / d.max(1e-6);
            return Ok(((rate * target * 1.1) as u64).max(start));
        }
        n *= 4;
    }
}

/// Items per second of each variant, round by round, the variants interleaved (the
/// starting variant rotates each round).
struct Group {
    variants: Vec<V>,
    sizes: Vec<u64>,
    rates: Vec<Vec<f64>>,
}

impl Group {
    fn rates(&self, v: V) -> &[f64] {
        self.variants
            .iter()
            .position(|x| *x == v)
            .map_or(&[], |i| self.rates[i].as_slice())
    }

    fn ratio(&self, num: V, den: V) -> Vec<f64> {
        self.rates(num)
            .iter()
            .zip(self.rates(den))
            .map(|(a, b)| a / b)
            .collect()
    }
}

fn run_group(
    rt: &tokio::runtime::Runtime,
    ty: Ty,
    variants: &[V],
    start: u64,
    opts: &Opts,
) -> Res<Group> {
    // Same items through every variant first: equal tallies, and a warm-up.
    let probe = start.min(10_000);
    let mut expected: Option<Tally> = None;
    for &v in variants {
        let (_, tally) = timed(rt, v, ty, probe)?;
        match expected {
            None => expected = Some(tally),
            Some(e) if e != tally => {
                return Err(format!(
                    "{} on {} items disagrees: {tally:?} vs {e:?}",
                    v.name(),
                    ty.name()
                )
                .into());
            }
            Some(_) => {}
        }
    }
    let mut sizes = Vec::new();
    for &v in variants {
        let n = calibrate(rt, v, ty, start, opts)?;
        eprintln!("  {} {}: {n} items per run", v.name(), ty.name());
        sizes.push(n);
    }
    let mut rates = vec![Vec::new(); variants.len()];
    for round in 0..opts.rounds {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let (d, _) = timed(rt, variants[i], ty, sizes[i])?;
            rates[i].push(sizes[i] as f64 / d.as_secs_f64());
        }
        eprintln!(
            "  round {}: {}",
            round + 1,
            variants
                .iter()
                .zip(&rates)
                .map(|(v, r)| format!(
                    "{} {:.2} M/s",
                    v.name(),
                    r.last().copied().unwrap_or(0.0) / 1e6
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(Group {
        variants: variants.to_vec(),
        sizes,
        rates,
    })
}

fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ratios(opts: &Opts) -> Res<()> {
    let provenance = report::provenance(&opts.command);
    let started = Instant::now();
    let rt = multi_thread()?;
    let mut rows: Vec<Row> = Vec::new();
    let mut details = String::new();
    let smoke = opts.mode == Mode::Smoke;
    let map4_start = if smoke { 20_000 } else { 100_000 };
    let mut map4_max: Option<f64> = None;

    let mut groups: Vec<(Ty, Group)> = Vec::new();
    if opts.wants("map4") {
        eprintln!("map4 u64:");
        let g = run_group(
            &rt,
            Ty::U64,
            &[
                V::BItem,
                V::BBatch,
                V::BBatchSync,
                V::BFused,
                V::Fw,
                V::FwGuarded,
                V::FwMacro,
                V::FwHand,
                V::FwSync,
            ],
            map4_start,
            opts,
        )?;
        map4_max = Some(report::median(g.rates(V::Fw)));
        groups.push((Ty::U64, g));
    }
    if opts.wants("string") {
        eprintln!("map4 String:");
        let g = run_group(
            &rt,
            Ty::Str,
            &[V::BItem, V::BBatch, V::BFused, V::Fw, V::FwGuarded],
            map4_start,
            opts,
        )?;
        groups.push((Ty::Str, g));
    }
    for (ty, g) in &groups {
        let w = format!("map4 {}", ty.name());
        rows.push(Row::new(
            &w,
            "map4 / B-item",
            Unit::Ratio,
            g.ratio(V::Fw, V::BItem),
            Target::AtLeast(20.0),
        ));
        rows.push(Row::new(
            &w,
            "map4 / B-batch",
            Unit::Ratio,
            g.ratio(V::Fw, V::BBatch),
            Target::AtLeast(0.6),
        ));
        rows.push(Row::new(
            &w,
            "map4 / B-fused",
            Unit::Ratio,
            g.ratio(V::Fw, V::BFused),
            Target::AtLeast(1.0),
        ));
    }
    if let Some((_, g)) = groups.iter().find(|(ty, _)| *ty == Ty::U64) {
        rows.push(Row::new(
            "map4 u64, sync fns",
            "map4-sync / B-batch-sync",
            Unit::Ratio,
            g.ratio(V::FwSync, V::BBatchSync),
            Target::AtLeast(0.6),
        ));
    }
    for (ty, g) in &groups {
        rows.push(Row::new(
            format!("map4-guarded {}", ty.name()),
            "guarded / map4",
            Unit::Ratio,
            g.ratio(V::FwGuarded, V::Fw),
            Target::AtLeast(0.85),
        ));
    }
    if let Some((_, g)) = groups.iter().find(|(ty, _)| *ty == Ty::U64) {
        rows.push(Row::new(
            "macro-vs-hand u64",
            "#[stage] / hand impl (wall clock)",
            Unit::Ratio,
            g.ratio(V::FwMacro, V::FwHand),
            Target::Within(0.98, 1.02),
        ));
    }
    if !groups.is_empty() {
        details.push_str("\nThroughput, median over rounds (items per run in parentheses):\n\n");
        details.push_str("| variant | u64 M items/s | String M items/s |\n|---|---:|---:|\n");
        for v in V::ALL {
            let cell = |ty: Ty| {
                groups
                    .iter()
                    .find(|(t, _)| *t == ty)
                    .and_then(|(_, g)| {
                        let i = g.variants.iter().position(|x| *x == v)?;
                        Some(format!(
                            "{:.2} ({})",
                            report::median(&g.rates[i]) / 1e6,
                            g.sizes[i]
                        ))
                    })
                    .unwrap_or_default()
            };
            let (a, b) = (cell(Ty::U64), cell(Ty::Str));
            if !a.is_empty() || !b.is_empty() {
                details.push_str(&format!("| {} | {a} | {b} |\n", v.name()));
            }
        }
    }

    if opts.wants("io") {
        eprintln!("io-bound:");
        let start = if smoke { 512 } else { 4_000 };
        let g = run_group(&rt, Ty::U64, &[V::IoHand, V::IoFw], start, opts)?;
        rows.push(Row::new(
            "io-bound (1 ms timer, 64 in flight)",
            "framework / buffer_unordered(64)",
            Unit::Ratio,
            g.ratio(V::IoFw, V::IoHand),
            Target::AtLeast(0.9),
        ));
        details.push_str(&format!(
            "\nio-bound: framework {:.0} items/s, buffer_unordered(64) {:.0} items/s (medians; \
             the ideal 64 / 1 ms = 64000/s is out of reach: tokio rounds timers up to the next ms).\n",
            report::median(g.rates(V::IoFw)),
            report::median(g.rates(V::IoHand))
        ));
    }

    if opts.wants("cpu") {
        eprintln!("cpu-bound:");
        let start = if smoke { 200 } else { 20_000 };
        let g = run_group(&rt, Ty::U64, &[V::Cpu1, V::Cpu2], start, opts)?;
        rows.push(Row::new(
            "cpu-bound sync #[stage] (~20 us/item), 2 cores",
            "concurrency 2 / concurrency 1",
            Unit::Ratio,
            g.ratio(V::Cpu2, V::Cpu1),
            Target::AtLeast(1.6),
        ));
    }

    if opts.wants("latency") {
        eprintln!("latency:");
        let max = match map4_max {
            Some(m) => m,
            None => {
                let n = calibrate(&rt, V::Fw, Ty::U64, map4_start, opts)?;
                let mut r = Vec::new();
                for _ in 0..3 {
                    let (d, _) = timed(&rt, V::Fw, Ty::U64, n)?;
                    r.push(n as f64 / d.as_secs_f64());
                }
                report::median(&r)
            }
        };
        let duration = match opts.mode {
            Mode::Full => Duration::from_secs(2),
            Mode::Quick => Duration::from_millis(500),
            Mode::Smoke => Duration::from_millis(50),
        };
        latency_section(&rt, max, duration, opts, &mut rows, &mut details)?;
    }

    if opts.wants("memory") {
        eprintln!("slow-sink memory:");
        let (n, reps) = match opts.mode {
            Mode::Full => (100_000, 3),
            Mode::Quick => (50_000, 1),
            Mode::Smoke => (2_000, 1),
        };
        details.push_str(&format!(
            "\nSlow-sink peak RSS (VmHWM, one process per run; {}-byte items, sink sleeps 1 ms per batch; \
             medians of {reps}):\n\n| pipeline | N = {n} | 2N = {} | 2N / N |\n|---|---:|---:|---:|\n",
            memory::PAYLOAD,
            2 * n
        ));
        for variant in memory::VARIANTS {
            let mut ratios = Vec::new();
            let (mut at_n, mut at_2n) = (Vec::new(), Vec::new());
            for _ in 0..reps {
                let a = memory::measure(variant, n)? as f64;
                let b = memory::measure(variant, 2 * n)? as f64;
                eprintln!("  {variant}: {a} KiB at N, {b} KiB at 2N");
                at_n.push(a);
                at_2n.push(b);
                ratios.push(b / a);
            }
            details.push_str(&format!(
                "| {variant} | {:.1} MiB | {:.1} MiB | {:.2}x |\n",
                report::median(&at_n) / 1024.0,
                report::median(&at_2n) / 1024.0,
                report::median(&ratios)
            ));
            rows.push(Row::new(
                format!("slow-sink memory, {variant}"),
                "peak RSS(2N) / RSS(N)",
                Unit::Ratio,
                ratios,
                if variant == "framework" {
                    Target::AtMost(1.1)
                } else {
                    Target::Info
                },
            ));
        }
    }

    let table = report::table(&rows);
    println!("{table}{details}");
    eprintln!("(took {:.0} s)", started.elapsed().as_secs_f64());
    if opts.write {
        let section = format!(
            "## Ratios ({} mode, {} rounds)\n\n{}\n{table}{details}\n![ratios](ratios.svg)\n",
            match opts.mode {
                Mode::Full => "full",
                Mode::Quick => "quick",
                Mode::Smoke => "smoke",
            },
            opts.rounds,
            provenance
        );
        let dir = results_dir();
        report::update_section(&dir.join("RESULTS.md"), "ratios", &section)?;
        std::fs::write(dir.join("ratios.svg"), report::svg(&rows, CHART_TITLE))?;
        eprintln!("wrote {}", dir.join("RESULTS.md").display());
    }
    Ok(())
}

/// Latency at 50% and 80% of `max` items/s, the framework and the B-batch-shaped
/// reference interleaved.
fn latency_section(
    rt: &tokio::runtime::Runtime,
    max: f64,
    duration: Duration,
    opts: &Opts,
    rows: &mut Vec<Row>,
    details: &mut String,
) -> Res<()> {
    use latency::Shape;
    let runs = [
        (Shape::Framework, 0.5),
        (Shape::Hand, 0.5),
        (Shape::Framework, 0.8),
        (Shape::Hand, 0.8),
    ];
    let name = |shape: Shape| match shape {
        Shape::Framework => "map4",
        Shape::Hand => "B-batch",
    };
    let mut merged = Vec::new();
    for _ in runs {
        merged.push(latency::new_histogram()?);
    }
    let mut p99s = vec![Vec::new(); runs.len()];
    let mut achieved = vec![Vec::new(); runs.len()];
    let mut batch = vec![Vec::new(); runs.len()];
    for round in 0..opts.rounds {
        for k in 0..runs.len() {
            let i = (round + k) % runs.len();
            let (shape, load) = runs[i];
            let rate = max * load;
            let m =
                rt.block_on(
                    async move { tokio::spawn(latency::run(shape, rate, duration)).await? },
                )?;
            let p99 = m.hist.value_at_quantile(0.99) as f64 / 1e6;
            eprintln!(
                "  {} {:.0}%: p99 {p99:.3} ms, achieved {:.2} M/s, {:.1} items per sink batch",
                name(shape),
                load * 100.0,
                m.achieved / 1e6,
                m.batch
            );
            p99s[i].push(p99);
            achieved[i].push(m.achieved);
            batch[i].push(m.batch);
            merged[i].add(&m.hist)?;
        }
    }
    details.push_str(&format!(
        "\nLatency from the intended send time (open-loop paced source, map4 on `(u64, u64)` \
         items), {} rounds of {} ms per run; 100% = map4 u64's median throughput, {:.2} M items/s \
         (measured with full 256-item batches). B-batch is the hand-written reference fed by \
         the same pacer. Percentiles over all rounds merged:\n\n\
         | pipeline | load | offered items/s | achieved items/s (median) | items per sink batch (median) | p50 | p99 | p99.9 | max |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        opts.rounds,
        duration.as_millis(),
        max / 1e6
    ));
    for (i, (shape, load)) in runs.iter().enumerate() {
        let h = &merged[i];
        let ms = |q: f64| format!("{:.3} ms", h.value_at_quantile(q) as f64 / 1e6);
        details.push_str(&format!(
            "| {} | {:.0}% | {:.2} M | {:.2} M | {:.1} | {} | {} | {} | {:.3} ms |\n",
            name(*shape),
            load * 100.0,
            max * load / 1e6,
            report::median(&achieved[i]) / 1e6,
            report::median(&batch[i]),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1e6
        ));
        let target = if *shape == Shape::Framework && *load == 0.5 {
            Target::AtMost(1.0)
        } else {
            Target::Info
        };
        rows.push(Row::new(
            format!("latency @ {:.0}% of max, {}", load * 100.0, name(*shape)),
            "p99 from intended send time",
            Unit::Ms,
            p99s[i].clone(),
            target,
        ));
    }
    Ok(())
}

fn instruction_counts(opts: &Opts) -> Res<()> {
    let provenance = report::provenance(&opts.command);
    let n: u64 = match opts.mode {
        Mode::Full => 500_000,
        Mode::Quick => 100_000,
        Mode::Smoke => 10_000,
    };
    let scratch =
        std::env::temp_dir().join(format!("pipeline-bench-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let variants = [
        V::BBatch,
        V::BBatchSync,
        V::BFused,
        V::Fw,
        V::FwSync,
        V::FwGuarded,
        V::FwMacro,
        V::FwHand,
    ];
    let mut per_item = Vec::new();
    let mut text = format!(
        "Marginal instructions per item, (Ir(2N) - Ir(N)) / N, N = {n}, u64 items, \
         `current_thread` runtime, `valgrind --tool=callgrind`:\n\n\
         | variant | Ir(N) | Ir(2N) | instr/item | x B-batch-sync | x B-batch |\n|---|---:|---:|---:|---:|---:|\n"
    );
    let measured = variants.iter().try_for_each(|&v| -> Res<()> {
        let a = callgrind::instructions(v, Ty::U64, n, &scratch)?;
        let b = callgrind::instructions(v, Ty::U64, 2 * n, &scratch)?;
        let marginal = (b as f64 - a as f64) / n as f64;
        eprintln!("  {}: {a} / {b} -> {marginal:.1} instr/item", v.name());
        per_item.push((v, a, b, marginal));
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&scratch);
    measured?;
    let get = |v: V| per_item.iter().find(|p| p.0 == v).map_or(f64::NAN, |p| p.3);
    let base = get(V::BBatch);
    let sync_base = get(V::BBatchSync);
    for (v, a, b, m) in &per_item {
        text.push_str(&format!(
            "| {} | {a} | {b} | {m:.1} | {:.2}x | {:.2}x |\n",
            v.name(),
            m / sync_base,
            m / base
        ));
    }
    text.push_str(
        "\nB-batch-sync maps each batch in place with plain fns (BENCHMARKS.md's \"B-batch, 27 \
         instructions/item\" reference, which the instruction targets are stated against); \
         B-batch awaits the same async fns as map4, one per item, pushing into a new `Vec`.\n",
    );
    let rows = [
        Row::new(
            "map4 u64 (async fns)",
            "instr/item, map4 / B-batch-sync",
            Unit::Ratio,
            vec![get(V::Fw) / sync_base],
            Target::AtMost(2.5),
        ),
        Row::new(
            "map4 u64 (sync fns, `#[stage] fn`)",
            "instr/item, map4-sync / B-batch-sync",
            Unit::Ratio,
            vec![get(V::FwSync) / sync_base],
            Target::AtMost(1.3),
        ),
        Row::new(
            "map4 u64 (async fns)",
            "instr/item, map4 / B-batch (async fns)",
            Unit::Ratio,
            vec![get(V::Fw) / base],
            Target::Info,
        ),
        Row::new(
            "map4-guarded u64",
            "instr/item, guarded / map4",
            Unit::Ratio,
            vec![get(V::FwGuarded) / get(V::Fw)],
            Target::Info,
        ),
        Row::new(
            "macro-vs-hand u64",
            "instr/item, #[stage] / hand impl",
            Unit::Ratio,
            vec![get(V::FwMacro) / get(V::FwHand)],
            Target::Within(0.98, 1.02),
        ),
        Row::new(
            "B-fused u64",
            "instr/item, B-fused / B-batch-sync",
            Unit::Ratio,
            vec![get(V::BFused) / sync_base],
            Target::Info,
        ),
    ];
    let table = report::table(&rows);
    println!("{text}\n{table}");
    if opts.write {
        let section = format!("## Instruction counts\n\n{}\n{text}\n{table}", provenance);
        report::update_section(&results_dir().join("RESULTS.md"), "callgrind", &section)?;
        eprintln!("wrote {}", results_dir().join("RESULTS.md").display());
    }
    Ok(())
}

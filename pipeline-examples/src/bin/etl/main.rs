//! The ETL job: every flight that left New York City in 2013 (nycflights13, shipped in
//! `pipeline-examples/data/`), parsed and validated, enriched with airline, plane and
//! weather, aggregated per carrier and day, and written to SQLite (or PostgreSQL).
//!
//! ```text
//! cargo run --release -p pipeline-examples --bin etl
//! cargo run --release -p pipeline-examples --bin etl -- --graph
//! cargo run --release -p pipeline-examples --bin etl -- --database-url postgres://postgres@127.0.0.1:5432/test
//! cargo run --release -p pipeline-examples --bin etl -- --compare
//! ```
//!
//! Cancelled flights (no `dep_time`) are routed to their own table `cancelled`, diverted
//! ones (departed, no `arr_delay`) stay in `flights` with `status = 'diverted'`; both
//! carry their `reason`. Malformed rows go to the dead-letter file with their line. The
//! per-day aggregates are kept in shared state (`Arc<Mutex<Daily>>`) and written to
//! `daily` after the run. Every table is upserted on its key: a re-run replaces rows.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pipeline_connectors::record::Record;
use pipeline_core::prelude::*;
use pipeline_core::source::Source;
use pipeline_core::{DeadLetter, PipelineControl, Ready};

mod db;
mod hand;
mod lookup;
mod model;

use db::{DbSink, Target};
use lookup::Lookup;
use model::{Aggregate, Daily, Enrich, Enriched, Flight, Parse, Status, Validate};

/// Runs the nycflights13 ETL pipeline: CSV -> validate -> enrich -> aggregate -> database.
#[derive(Debug, Parser)]
#[command(name = "etl", version)]
struct Args {
    /// The data directory: flights.csv[.gz], airlines.csv, planes.csv, weather.csv
    /// (each plain or .gz).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/nycflights13"))]
    data: PathBuf,
    /// The SQLite database file (created if missing).
    #[arg(long, default_value = "target/etl/flights.db")]
    database: PathBuf,
    /// Write to this PostgreSQL server instead (postgres://user@host:port/dbname).
    #[arg(long)]
    database_url: Option<String>,
    /// A prefix for the table names (`flights`, `cancelled`, `daily`).
    #[arg(long, default_value = "")]
    table_prefix: String,
    /// The dead-letter file (JSON lines, replaced at each run).
    #[arg(long, default_value = "target/etl/dlq.jsonl")]
    dead_letters: PathBuf,
    /// Write the run report as JSON to this file.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Print the pipeline's topology (Mermaid) and exit.
    #[arg(long)]
    graph: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Also run a hand-written loop doing the same work into a second SQLite file
    /// (`<database>.hand.db`) and print both rates.
    #[arg(long)]
    compare: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("etl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole pipeline; the same code for SQLite, PostgreSQL and `--graph`.
#[allow(clippy::too_many_arguments)]
fn build<S: Source<Item = Record<Flight>>>(
    source: S,
    file: String,
    lookup: Arc<Lookup>,
    daily: Arc<Mutex<Daily>>,
    flights: DbSink<Enriched>,
    cancelled: DbSink<Enriched>,
    dead_letters: &Path,
) -> Ready {
    Pipeline::builder("etl")
        .source(source)
        .stage(Parse)
        .stage(Validate::new(file))
        .stage(Enrich::new(lookup))
        .stage(Aggregate::new(daily))
        .route(
            |f: &Enriched| f.status == Status::Cancelled,
            |cancelled_flights| cancelled_flights.sink(cancelled).name("cancelled"),
        )
        .sink(flights)
        .name("flights")
        .dead_letter(sink::jsonl_file::<DeadLetter>(dead_letters))
}

async fn run(args: Args) -> Result<ExitCode, BoxError> {
    if args.graph {
        let ready = build(
            // An empty CSV source, so the graph shows the real source's name.
            pipeline_connectors::csv::CsvOptions::new()
                .open_reader::<Flight>("flights.csv", std::io::Cursor::new(Vec::new())),
            String::new(),
            Arc::new(Lookup::default()),
            Arc::default(),
            DbSink::Discard,
            DbSink::Discard,
            &args.dead_letters,
        );
        // `etl --graph | head` closes the pipe early: not an error worth a panic.
        let _ = writeln!(std::io::stdout(), "{}", ready.build().graph().to_mermaid());
        return Ok(ExitCode::SUCCESS);
    }

    let target = match &args.database_url {
        Some(url) => Target::Postgres(url.clone()),
        None => {
            create_parent(&args.database)?;
            Target::Sqlite(args.database.clone())
        }
    };
    let prefix = &args.table_prefix;

    let started = Instant::now();
    let lookup = Arc::new(Lookup::load(&args.data).await?);
    let (airlines, planes, weather) = lookup.sizes();
    let loaded = started.elapsed();

    let (flights_source, file) = lookup::csv_source::<Flight>(&args.data, "flights.csv")?;
    create_parent(&args.dead_letters)?;
    match std::fs::remove_file(&args.dead_letters) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot replace `{}`: {e}", args.dead_letters.display()).into());
        }
        _ => {}
    }
    let flights_sink = target
        .open::<Enriched>(model::flights_table(&format!("{prefix}flights")))
        .await?;
    let cancelled_sink = target
        .open::<Enriched>(model::flights_table(&format!("{prefix}cancelled")))
        .await?;
    let daily = Arc::new(Mutex::new(Daily::default()));

    let cpu_before = cpu_seconds();
    let run_started = Instant::now();
    let handle = build(
        flights_source,
        file.clone(),
        Arc::clone(&lookup),
        Arc::clone(&daily),
        flights_sink,
        cancelled_sink,
        &args.dead_letters,
    )
    .spawn();
    let progress = tokio::spawn(progress(handle.control(), args.quiet));
    let result = handle.join().await;
    progress.await?;
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("{}", e.report);
            return Err(e.into());
        }
    };

    // The aggregates, out of the shared state, through the same kind of sink.
    let rows = daily.lock().unwrap_or_else(|e| e.into_inner()).rows();
    let daily_rows = rows.len();
    let daily_report = Pipeline::builder("daily")
        .source(source::iter(rows))
        .sink(
            target
                .open(model::daily_table(&format!("{prefix}daily")))
                .await?,
        )
        .name("daily")
        .run()
        .await?;
    let wall = run_started.elapsed();
    let cpu = cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);

    println!();
    print!("{report}");
    println!("  {:<20} {:>10}", "element", "rows/s");
    for s in &report.stages {
        println!("  {:<20} {:>10.0}", s.name, s.rate);
    }
    print!("{daily_report}");
    let rate = report.emitted as f64 / wall.as_secs_f64();
    println!(
        "lookups: {airlines} airlines, {planes} planes, {weather} weather hours (loaded in {:.3}s)",
        loaded.as_secs_f64()
    );
    println!(
        "rows: {} in {:.3}s = {rate:.0} rows/s, CPU {}",
        report.emitted,
        wall.as_secs_f64(),
        cpu.map_or("n/a".to_owned(), |c| format!("{c:.2}s"))
    );
    println!(
        "ledger: {}",
        if report.is_balanced() {
            "balanced"
        } else {
            "UNBALANCED"
        }
    );
    println!(
        "dead letters: {} in {}",
        report.dead_lettered,
        args.dead_letters.display()
    );
    println!("database: {}", target.describe());
    let query = format!(
        "select carrier, name, sum(flights) as flights, sum(cancelled) as cancelled, \
         round(avg(mean_arr_delay), 1) as mean_arr_delay, max(max_arr_delay) as worst \
         from {prefix}daily group by carrier order by mean_arr_delay desc limit 10"
    );
    match &target {
        Target::Sqlite(path) => println!("try: sqlite3 {} \"{query}\"", path.display()),
        Target::Postgres(_) => println!("try: psql {} -c \"{query}\"", target.describe()),
    }

    if let Some(path) = &args.report_json {
        create_parent(path)?;
        let json = serde_json::json!({
            "report": report,
            "daily": daily_report,
            "daily_rows": daily_rows,
            "database": target.describe(),
            "dead_letters": args.dead_letters,
            "wall_seconds": wall.as_secs_f64(),
            "cpu_seconds": cpu,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }

    if args.compare {
        let hand_db = args.database.with_extension("hand.db");
        let _ = std::fs::remove_file(&hand_db);
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let hand = hand::run(&args.data, &lookup, &hand_db)?;
        let hand_wall = started.elapsed();
        let hand_cpu = cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
        let hand_rate = hand.rows as f64 / hand_wall.as_secs_f64();
        println!();
        println!(
            "hand-written loop: {} rows ({} flights, {} cancelled, {} malformed, {} daily) in {:.3}s = {hand_rate:.0} rows/s, CPU {} -> {}",
            hand.rows,
            hand.flights,
            hand.cancelled,
            hand.malformed,
            hand.daily,
            hand_wall.as_secs_f64(),
            hand_cpu.map_or("n/a".to_owned(), |c| format!("{c:.2}s")),
            hand_db.display()
        );
        println!(
            "pipeline / hand-written: {:.2}x the rate, {} the CPU",
            rate / hand_rate,
            match (cpu, hand_cpu) {
                (Some(p), Some(h)) if h > 0.0 => format!("{:.2}x", p / h),
                _ => "n/a".to_owned(),
            }
        );
    }

    Ok(if report.is_balanced() && daily_report.is_balanced() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// A bar driven by the live stats, ~10 times a second, until the pipeline finished.
async fn progress(control: PipelineControl, quiet: bool) {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {human_pos} rows {msg}")
    {
        bar.set_style(style);
    }
    loop {
        let stats = control.stats();
        bar.set_position(stats.finished);
        let secs = stats.uptime.as_secs_f64();
        let rate = if secs > 0.0 {
            stats.finished as f64 / secs
        } else {
            0.0
        };
        bar.set_message(format!(
            "finished ({rate:.0} rows/s), {} read, {} in flight",
            stats.emitted, stats.in_flight
        ));
        if control.is_finished() {
            break;
        }
        tokio::select! {
            () = control.finished() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    bar.finish();
}

fn create_parent(path: &Path) -> Result<(), BoxError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    }
    Ok(())
}

/// User + system CPU time of this process so far (Linux: `/proc/self/stat`).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux configuration in use.
    Some((utime + stime) / 100.0)
}

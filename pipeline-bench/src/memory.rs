//! Slow-sink memory: source -> map -> sink sleeping 1 ms per batch, 512-byte items. Each
//! run is its own process (VmHWM never goes down), re-executing this binary with the
//! hidden `__rss` subcommand; the parent compares peak RSS at N and 2N items.

use std::convert::Infallible;
use std::process::Command;
use std::time::Duration;

use pipeline_core::sink::{Sink, WriteError};
use pipeline_core::stage::map_fn;
use pipeline_core::{Pipeline, source};
use tokio::sync::mpsc;

use crate::work::Res;

/// Bytes per item.
pub(crate) const PAYLOAD: usize = 512;
/// The sink's sleep per batch.
const SINK_SLEEP: Duration = Duration::from_millis(1);
/// Items the unbounded baseline's sink takes per batch.
const SINK_BATCH: usize = 256;

/// The two pipelines measured.
pub(crate) const VARIANTS: [&str; 2] = ["framework", "unbounded"];

fn payload(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; PAYLOAD];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn touch(mut v: Vec<u8>) -> Vec<u8> {
    v[8] = v[0].wrapping_add(1);
    v
}

struct SlowSink {
    seen: u64,
}

impl Sink for SlowSink {
    type Item = Vec<u8>;

    async fn write(&mut self, items: &mut Vec<Vec<u8>>) -> Result<(), WriteError> {
        tokio::time::sleep(SINK_SLEEP).await;
        self.seen += items.len() as u64;
        items.clear();
        Ok(())
    }
}

async fn framework(n: u64) -> Res<()> {
    let report = Pipeline::builder("slow-sink")
        .source(source::iter((0..n).map(payload)))
        .stage(map_fn("touch", |v: Vec<u8>| async move {
            Ok::<_, Infallible>(touch(v))
        }))
        .sink(SlowSink { seen: 0 })
        .run()
        .await?;
    if report.delivered != n {
        return Err(format!("slow-sink: delivered {} of {n}", report.delivered).into());
    }
    Ok(())
}

/// What people write when they do not think about memory: unbounded channels.
async fn unbounded(n: u64) -> Res<()> {
    let (tx0, mut rx0) = mpsc::unbounded_channel::<Vec<u8>>();
    let (tx1, mut rx1) = mpsc::unbounded_channel::<Vec<u8>>();
    let source = tokio::spawn(async move {
        for i in 0..n {
            if tx0.send(payload(i)).is_err() {
                return;
            }
            if i % 256 == 255 {
                tokio::task::yield_now().await;
            }
        }
    });
    let map = tokio::spawn(async move {
        while let Some(v) = rx0.recv().await {
            if tx1.send(touch(v)).is_err() {
                return;
            }
        }
    });
    let mut seen = 0u64;
    let mut buf = Vec::with_capacity(SINK_BATCH);
    while rx1.recv_many(&mut buf, SINK_BATCH).await > 0 {
        tokio::time::sleep(SINK_SLEEP).await;
        seen += buf.len() as u64;
        buf.clear();
    }
    source.await?;
    map.await?;
    if seen != n {
        return Err(format!("unbounded: delivered {seen} of {n}").into());
    }
    Ok(())
}

/// Peak RSS of this process in KiB (VmHWM).
pub(crate) fn vm_hwm_kib() -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM in /proc/self/status".into())
}

/// The hidden `__rss VARIANT N` subcommand: runs one pipeline, prints `VmHWM_KiB=<n>`.
pub(crate) fn child(variant: &str, n: u64) -> Res<()> {
    let rt = crate::multi_thread()?;
    match variant {
        "framework" => rt.block_on(async move { tokio::spawn(framework(n)).await? })?,
        "unbounded" => rt.block_on(async move { tokio::spawn(unbounded(n)).await? })?,
        other => return Err(format!("unknown slow-sink variant `{other}`").into()),
    }
    drop(rt);
    println!("VmHWM_KiB={}", vm_hwm_kib()?);
    Ok(())
}

/// Runs `__rss variant n` in a fresh process; its peak RSS in KiB.
pub(crate) fn measure(variant: &str, n: u64) -> Res<u64> {
    let exe = crate::child_exe()?;
    let out = Command::new(exe)
        .args(["__rss", variant, &n.to_string()])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "__rss {variant} {n} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM_KiB="))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("__rss {variant} {n} printed no VmHWM: {stdout}").into())
}

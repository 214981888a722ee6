#[stage(blocking, flatten, restart(max = 3, within = "60s", backoff = "1s"))]
pub fn dedup(batch: Vec<u64>, #[state] seen: &mut HashSet<u64>) -> Vec<u64> {
    batch.into_iter().filter(|id| seen.insert(*id)).collect()
}

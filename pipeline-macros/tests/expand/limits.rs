#[stage(retry(attempts = 4, budget = 0.2, budget_floor = 5), rate(limit = "500/s", burst = 50))]
async fn notify(user: u64, #[state] _db: &Db) -> Result<u64, NotifyError> {
    Ok(user)
}

#[stage(concurrency = 8, timeout = "2s", retry(attempts = 5, backoff = "100ms", when = is_transient))]
pub async fn enrich(order: &Order, #[state] db: &Db, cx: &Context) -> Result<Enriched, DbError> {
    db.enrich(order, cx.attempt()).await
}

#[stage]
async fn parse(line: &str) -> Option<Order> {
    line.parse().ok()
}

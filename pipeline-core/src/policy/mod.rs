//! Policies around a stage's calls: timeout, retry with backoff and budget, circuit
//! breaker, rate limit, panic capture. Each is a small wrapper implementing
//! [`Stage`](crate::Stage), composed by wrapping like tower layers.

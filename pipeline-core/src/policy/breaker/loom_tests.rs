//! Loom model check of the half-open permit accounting: in every interleaving of two
//! threads racing for the single probe permit, at most one holds it at a time, and a
//! released (ignored) permit frees the slot, so half-open never wedges.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{BreakerState, CircuitBreaker};
use crate::options::{BreakerOptions, Window};
use crate::sync::AtomicUsize;

#[test]
fn half_open_grants_one_probe_at_a_time_and_never_wedges() {
    loom::model(|| {
        let mut opts = BreakerOptions::default();
        opts.window = Window::Count(1);
        opts.min_calls = 1;
        opts.half_open = 1;
        // Open for no time at all: the next request moves to half-open.
        opts.open_for = Duration::ZERO;
        let breaker = Arc::new(CircuitBreaker::new("loom", &opts));
        breaker.force_open();
        let holding = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (breaker, holding) = (Arc::clone(&breaker), Arc::clone(&holding));
                loom::thread::spawn(move || {
                    if let Ok(permit) = breaker.try_acquire() {
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        assert_eq!(now, 1, "two probes held at once");
                        holding.fetch_sub(1, Ordering::SeqCst);
                        permit.ignore();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Ignored probes decide nothing and give their slot back.
        assert_ne!(breaker.state(), BreakerState::Closed);
        let probe = breaker.try_acquire();
        assert!(
            probe.is_ok(),
            "half-open wedged: no permit after every probe was released"
        );
    });
}

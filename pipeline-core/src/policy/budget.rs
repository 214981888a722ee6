//! [`RetryBudget`]: retries as a share of recent calls, plus a floor per second.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Time buckets in the window; the window slides by `ttl / SLOTS`.
const SLOTS: usize = 10;
/// Fixed-point scale of one deposit, so shares like 0.2 or 3.0 stay exact enough.
const SCALE: i64 = 1000;

/// A retry budget shared by a stage, after tower's `TpsBudget`: retries may add at most
/// `percent` of the calls seen over the last `ttl`, plus `min_per_sec` retries per second
/// whatever the traffic. It keeps a failing dependency from turning every item into
/// `attempts` calls (a retry storm) while still retrying the odd failure.
///
/// [`deposit`](Self::deposit) once per item (its first attempt), and
/// [`withdraw`](Self::withdraw) before each retry; a `false` means "do not retry".
///
/// # Cost
///
/// `deposit` is one relaxed atomic add and reads no clock (it runs per item). Deposits
/// are booked into the time buckets at the next `withdraw`, spread evenly over the time
/// since the previous one: exact for steady traffic; after a long quiet spell only the
/// share of them that falls inside the window counts, so a burst of old calls cannot
/// fund a retry storm now. `withdraw` (per failure) reads tokio's clock and takes a
/// short lock.
///
/// # Examples
///
/// ```
/// use pipeline_core::policy::RetryBudget;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // 20% of recent calls, and no floor.
/// let budget = RetryBudget::new(0.2).with_min_per_sec(0);
/// for _ in 0..10 {
///     budget.deposit();
/// }
/// assert!(budget.withdraw());
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw(), "10 calls buy 2 retries at 20%");
/// # }
/// ```
pub struct RetryBudget {
    /// Deposits not yet booked into a bucket.
    pending: AtomicU64,
    ledger: Mutex<Ledger>,
    percent: f64,
    min_per_sec: u32,
    ttl: Duration,
    /// Budget units added by one call.
    deposit: i64,
    /// Budget units one retry costs.
    withdraw: i64,
    /// The floor: units available with no traffic (`min_per_sec * ttl` retries).
    reserve: i64,
}

#[derive(Debug)]
struct Ledger {
    /// Units per bucket; bucket of generation `g` is `slots[g % SLOTS]`.
    slots: [i64; SLOTS],
    /// Time of generation 0, set by the first `withdraw`.
    origin: Option<Instant>,
    /// Newest generation with a live bucket.
    head: u64,
    /// Generation of the previous booking of pending deposits.
    booked: u64,
}

impl RetryBudget {
    /// A budget allowing retries worth `percent` of recent calls (`0.2` = one retry per
    /// five calls), with tower's defaults: a floor of 10 retries per second and a 10 s
    /// window. Negative or NaN shares count as 0.
    pub fn new(percent: f64) -> Self {
        RetryBudget::build(percent, 10, Duration::from_secs(10))
    }

    /// Sets the floor of retries per second allowed whatever the traffic.
    #[must_use]
    pub fn with_min_per_sec(self, min_per_sec: u32) -> Self {
        RetryBudget::build(self.percent, min_per_sec, self.ttl)
    }

    /// Sets how long a call keeps counting toward the budget (at least one second).
    #[must_use]
    pub fn with_ttl(self, ttl: Duration) -> Self {
        RetryBudget::build(self.percent, self.min_per_sec, ttl)
    }

    fn build(percent: f64, min_per_sec: u32, ttl: Duration) -> Self {
        let percent = if percent.is_finite() && percent > 0.0 {
            percent
        } else {
            0.0
        };
        let ttl = ttl.max(Duration::from_secs(1));
        // One call deposits SCALE units; one retry costs SCALE / percent units.
        let (deposit, withdraw) = if percent == 0.0 {
            (0, SCALE)
        } else {
            (SCALE, ((SCALE as f64 / percent).round() as i64).max(1))
        };
        let reserve = i64::from(min_per_sec)
            .saturating_mul(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
            .saturating_mul(withdraw);
        RetryBudget {
            pending: AtomicU64::new(0),
            ledger: Mutex::new(Ledger {
                slots: [0; SLOTS],
                origin: None,
                head: 0,
                booked: 0,
            }),
            percent,
            min_per_sec,
            ttl,
            deposit,
            withdraw,
            reserve,
        }
    }

    /// The share of recent calls retries may add.
    pub fn percent(&self) -> f64 {
        self.percent
    }

    /// Retries per second allowed with no traffic.
    pub fn min_per_sec(&self) -> u32 {
        self.min_per_sec
    }

    /// How long a call counts toward the budget.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Counts one call (an item's first attempt).
    pub fn deposit(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the cost of one retry from the budget; `false` (and nothing taken) when the
    /// budget cannot pay for it.
    pub fn withdraw(&self) -> bool {
        let now = Instant::now();
        let mut ledger = match self.ledger.lock() {
            Ok(guard) => guard,
            // The ledger is plain numbers, valid after any panic elsewhere.
            Err(poisoned) => poisoned.into_inner(),
        };
        let generation = ledger.generation(now, self.ttl);
        ledger.advance(generation);
        let pending = self.pending.swap(0, Ordering::Relaxed);
        ledger.book(pending, generation, self.deposit);
        let balance: i64 = ledger.slots.iter().sum::<i64>() + self.reserve;
        if balance >= self.withdraw {
            ledger.slots[slot(generation)] -= self.withdraw;
            true
        } else {
            false
        }
    }
}

impl Ledger {
    fn generation(&mut self, now: Instant, ttl: Duration) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let width = (ttl / SLOTS as u32).as_nanos().max(1);
        let age = now.saturating_duration_since(origin).as_nanos();
        u64::try_from(age / width).unwrap_or(u64::MAX)
    }

    /// Moves the window forward to `generation`, emptying the buckets that fell out.
    fn advance(&mut self, generation: u64) {
        if generation <= self.head {
            return;
        }
        let stale = (generation - self.head).min(SLOTS as u64);
        for g in (generation + 1 - stale)..=generation {
            self.slots[slot(g)] = 0;
        }
        self.head = generation;
    }

    /// Books `count` deposits made since the previous booking, spread evenly over the
    /// generations since then; the part that falls before the window has expired.
    fn book(&mut self, count: u64, generation: u64, unit: i64) {
        let first = self.booked.min(generation);
        self.booked = generation;
        if count == 0 || unit == 0 {
            return;
        }
        let span = generation - first + 1;
        let live = span.min(SLOTS as u64);
        // count * live / span deposits fall inside the window (u128: no overflow).
        let inside = (u128::from(count) * u128::from(live) / u128::from(span)) as i64;
        let total = inside.saturating_mul(unit);
        let share = total / live as i64;
        for g in (generation + 1 - live)..=generation {
            self.slots[slot(g)] += share;
        }
        self.slots[slot(generation)] += total - share * live as i64;
    }
}

fn slot(generation: u64) -> usize {
    (generation % SLOTS as u64) as usize
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("percent", &self.percent)
            .field("min_per_sec", &self.min_per_sec)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    #[tokio::test(start_paused = true)]
    async fn floor_alone_allows_min_per_sec_over_the_window() {
        let b = RetryBudget::new(0.2).with_min_per_sec(5);
        let granted = (0..1000).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 50, "5/s over 10s");
        // Withdrawals expire with the window: the floor comes back.
        advance(Duration::from_secs(10)).await;
        assert!(b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_share_and_zero_floor_never_retries() {
        let b = RetryBudget::new(0.0).with_min_per_sec(0);
        for _ in 0..100 {
            b.deposit();
        }
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn shares_above_one_allow_several_retries_per_call() {
        let b = RetryBudget::new(3.0).with_min_per_sec(0);
        b.deposit();
        assert_eq!((0..10).filter(|_| b.withdraw()).count(), 3);
    }

    /// 100% failures: every item is deposited and then asks for up to 4 retries. Over any
    /// span the retries stay within share * calls + floor * ttl.
    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_budget_under_total_failure() {
        let b = RetryBudget::new(0.2); // floor 10/s, ttl 10s
        let mut retries = 0u64;
        let mut per_second = Vec::new();
        for second in 0..30 {
            let mut this_second = 0u64;
            for _ in 0..100 {
                b.deposit();
                for _ in 0..4 {
                    if b.withdraw() {
                        this_second += 1;
                    } else {
                        break;
                    }
                }
                advance(Duration::from_millis(10)).await;
            }
            let _ = second;
            retries += this_second;
            per_second.push(this_second);
        }
        // 3000 calls over 30s: at most 20% of them plus 10/s (the reserve refills once
        // per ttl: 3 windows of 100).
        let max = 3000 / 5 + 3 * 100;
        assert!(retries <= max, "{retries} retries > {max}");
        // Far fewer than the 12_000 retries an unbudgeted retry would make, but the
        // share is really granted.
        assert!(retries >= 3000 / 5, "{retries} retries");
        // Every sliding 10 s: at most 20% of the 1000 calls in it + the 100 floor.
        for w in per_second.windows(10) {
            let sum: u64 = w.iter().sum();
            assert!(sum <= 200 + 100 + 20, "window of {sum} retries");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_after_a_quiet_spell_are_not_all_credited_now() {
        let b = RetryBudget::new(1.0).with_min_per_sec(0);
        assert!(!b.withdraw()); // starts the clock
        for _ in 0..100 {
            b.deposit();
        }
        advance(Duration::from_secs(100)).await;
        // 100 deposits spread over 100 s: about 10 fall in the last 10 s.
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert!(granted <= 11, "{granted}");
        assert!(granted >= 9, "{granted}");
    }
}

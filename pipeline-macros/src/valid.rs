//! Phase 3: rules about settings that are required or go together, and between the
//! options and the signature. Each broken rule is reported on the option that breaks it,
//! and that option is dropped, so the expansion that follows (see `fallback`) stays
//! well-typed and the user sees only the real mistakes.

use std::time::Duration;

use syn::ItemFn;

use crate::ast::StageFn;
use crate::attr::{Args, Slot, list_of};
use crate::ctxt::Ctxt;

/// `RetryOptions::new`'s defaults, for messages about them.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Checks the rules that involve more than one option or the signature.
pub(crate) fn check(args: &mut Args, func: &ItemFn, stage: Option<&StageFn>, cx: &Ctxt) {
    required_settings(args, cx);
    let is_async = func.sig.asyncness.is_some();

    // `blocking` moves a plain fn off the async workers; an async fn is already on them.
    if let Some(blocking) = args.blocking.get().filter(|o| o.value)
        && is_async
    {
        cx.error(
            blocking.key,
            "`blocking` is for a plain `fn` doing CPU-bound or blocking work; this \
                 function is `async`, so it already runs on the async workers: remove \
                 `blocking`, or remove `async` if the body never awaits",
        );
        args.blocking.clear();
    }

    // A plain fn runs to completion once called: on the blocking pool (`blocking`) a
    // timed-out attempt would keep running next to its own retry, and on an async worker
    // the timer cannot even fire until the call returns (DESIGN.md, "Decisions").
    if !is_async && let Some(timeout) = args.timeout.get() {
        let message = if Args::is_set(&args.blocking) {
            "`timeout` cannot be used with `blocking`: a blocking call cannot be \
             cancelled, so a timed-out attempt would keep running beside its retry; \
             remove `timeout`, or make the function `async` and await something \
             cancellable"
        } else {
            "`timeout` has no effect on a plain `fn`: the call runs to completion once \
             started and cannot be cancelled, so the timeout could never fire; remove \
             `timeout`, or make the function `async` and await something cancellable"
        };
        cx.error(timeout.key, message);
        args.timeout.clear();
    }

    // `ordered` only matters when several items are in flight.
    let concurrency = args.concurrency.get().map_or(1, |o| o.value);
    if let Some(ordered) = args.ordered.get().filter(|o| o.value)
        && concurrency <= 1
    {
        cx.error(
            ordered.key,
            "`ordered` has no effect without `concurrency` above 1: with one item in \
                 flight the output is always in input order; add `concurrency = N`, or \
                 remove `ordered`",
        );
        args.ordered.clear();
    }

    if let Some(stage) = stage {
        signature_rules(args, stage, cx);
    }

    if let Some(retry) = args.retry.get() {
        let retry = &retry.value;
        let backoff = retry.backoff.get().map_or(DEFAULT_BACKOFF, |o| o.value);
        match retry.max_backoff.get() {
            Some(max) if max.value < backoff => cx.error(
                max.span,
                format!(
                    "`max_backoff` ({}) is shorter than `backoff` ({}): the first retry \
                     would already wait longer than the cap; raise `max_backoff` or lower \
                     `backoff`",
                    humantime::format_duration(max.value),
                    humantime::format_duration(backoff),
                ),
            ),
            None if backoff > DEFAULT_MAX_BACKOFF => {
                if let Some(b) = retry.backoff.get() {
                    cx.error(
                        b.span,
                        "`backoff` is longer than the default `max_backoff` of 10s; set \
                         `max_backoff` too",
                    );
                }
            }
            _ => {}
        }
    }
}

/// Settings a list option cannot do without. A list missing one is reported on its key
/// and dropped; so is one whose required value was invalid (that was reported already).
fn required_settings(args: &mut Args, cx: &Ctxt) {
    require(
        &mut args.retry,
        cx,
        &[("attempts", |r| r.attempts.presence())],
        |missing| {
            format!(
                "`retry` needs {missing}, the number of attempts in all, the first included, \
                 such as `retry(attempts = 3)`"
            )
        },
    );
    require(
        &mut args.restart,
        cx,
        &[
            ("max", |r| r.max.presence()),
            ("within", |r| r.within.presence()),
        ],
        |missing| {
            format!(
                "`restart` needs {missing}: at most `max` restarts `within` a window, such as \
                 `restart(max = 3, within = \"60s\")`"
            )
        },
    );
    require(
        &mut args.rate,
        cx,
        &[("limit", |r| r.limit.presence())],
        |missing| {
            format!(
                "`rate` needs {missing}, the calls allowed per period: write \
                 `rate = \"500/s\"`, or `rate(limit = \"500/s\", burst = 50)` to also bound \
                 the burst"
            )
        },
    );

    // The floor belongs to the budget.
    if let Some(retry) = args.retry.value_mut() {
        let retry = &mut retry.value;
        if let Some(floor) = retry.budget_floor.get()
            && !retry.budget.is_given()
        {
            cx.error(
                floor.key,
                "`budget_floor` has no effect without `budget`: the floor is the retries \
                 per second a retry budget allows whatever its share; add `budget = 0.2`, or \
                 remove `budget_floor`",
            );
            retry.budget_floor.clear();
        }
    }
}

/// A required setting of a list option: its name, and whether it was written and valid.
type Required<T> = (&'static str, fn(&T) -> (bool, bool));

/// Reports the required settings `list` lacks (`message` gets their names) and drops
/// the list when any is missing or invalid.
fn require<T>(
    list: &mut Slot<T>,
    cx: &Ctxt,
    required: &[Required<T>],
    message: impl FnOnce(String) -> String,
) {
    let Some(opt) = list.get() else {
        return;
    };
    let missing: Vec<String> = required
        .iter()
        .filter(|(_, presence)| !presence(&opt.value).0)
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if !missing.is_empty() {
        cx.error(opt.key, message(list_of(&missing, " and ")));
    }
    if required.iter().any(|(_, presence)| !presence(&opt.value).1) {
        list.clear();
    }
}

fn signature_rules(args: &mut Args, stage: &StageFn, cx: &Ctxt) {
    // Mutable per-stage state is locked for a whole call: one item at a time.
    if stage.has_mut_state() {
        if let Some(c) = args.concurrency.get().filter(|c| c.value > 1) {
            cx.error(
                c.span,
                "a stage with mutable state (`#[state] s: &mut S`) runs one item at a time; \
                 remove `concurrency`, or share the state as `&S` with its own locking \
                 (a `Mutex` or atomics inside `S`)",
            );
            args.concurrency.clear();
        }
    } else if let Some(restart) = args.restart.get() {
        // Restarting rebuilds mutable state; a stage without any has nothing to rebuild,
        // and a panic in it only fails the attempt (DESIGN.md, "Failure semantics").
        cx.error(
            restart.key,
            "`restart` has no effect here: this stage has no mutable state to rebuild, and a \
             panic in a stateless stage only fails that attempt; remove `restart`, or take \
             per-stage state with `#[state] name: &mut S`",
        );
        args.restart.clear();
    }

    // `when` classifies errors; an infallible function has none.
    if stage.output.error.is_none()
        && let Some(retry) = args.retry.value_mut()
        && let Some(when) = retry.value.when.get()
    {
        cx.error(
            when.key,
            "`when` has no effect: this function returns no `Result`, so it has no \
                     error to classify; remove `when`",
        );
        retry.value.when.clear();
    }
}

//! Phase 1: `#[stage(...)]` parsed into raw values, each with the span of its key and of
//! its value. Only the syntax and the range of each value are checked here; settings a
//! list requires, and rules that involve several options or the function's signature,
//! live in `valid`. Every key goes through one sequence (`entry::Entry`): read the value
//! in its shape, parse it, key it, store it once.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Expr, Ident, LitStr};

use crate::ctxt::Ctxt;

mod entry;
mod settings;
mod values;

use entry::Entry;
use settings::{breaker_setting, rate_setting, restart_setting, retry_setting};
use values::{choice, crate_path, duration, int, rate, string};

pub(crate) use values::list_of;

/// Option names, in the order the docs and the messages list them.
const OPTIONS: &[&str] = &[
    "name",
    "concurrency",
    "ordered",
    "buffer",
    "timeout",
    "retry",
    "breaker",
    "rate",
    "on_error",
    "restart",
    "blocking",
    "flatten",
    "crate",
];
const RETRY: &[&str] = &[
    "attempts",
    "backoff",
    "max_backoff",
    "jitter",
    "budget",
    "budget_floor",
    "when",
];
const BREAKER: &[&str] = &[
    "failure_rate",
    "slow_call_rate",
    "slow_call",
    "window",
    "min_calls",
    "open_for",
    "half_open",
    "mode",
];
const RATE: &[&str] = &["limit", "burst"];
const RESTART: &[&str] = &["max", "within", "backoff"];
/// Every list option with its settings, for a setting written at the top level.
const LISTS: &[(&str, &[&str])] = &[
    ("retry", RETRY),
    ("breaker", BREAKER),
    ("rate", RATE),
    ("restart", RESTART),
];
/// The choices of `on_error` and of `breaker(mode)`, each with its meaning: a table
/// rather than positions in a list, so reordering the names cannot change what they mean.
const ON_ERROR: &[(&str, OnError)] = &[
    ("dead_letter", OnError::DeadLetter),
    ("drop", OnError::Drop),
    ("fail", OnError::Fail),
];
const MODES: &[(&str, Mode)] = &[("wait", Mode::Wait), ("fail_fast", Mode::FailFast)];

/// One parsed value with the span of its key (`timeout`) and of its value (`"2s"`).
pub(crate) struct Opt<T> {
    pub(crate) key: Span,
    pub(crate) span: Span,
    pub(crate) value: T,
}

/// A "set once" cell: the one place duplicates are detected, for every option and every
/// setting inside `retry(...)`, `breaker(...)` and `restart(...)`.
pub(crate) struct Slot<T> {
    seen: bool,
    value: Option<Opt<T>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            seen: false,
            value: None,
        }
    }
}

impl<T> Slot<T> {
    /// Stores `value` (`None` when it was invalid, already reported) unless the key was
    /// seen before, in which case the duplicate key is reported.
    fn set(&mut self, cx: &Ctxt, key: &Ident, level: Level, value: Option<Opt<T>>) {
        if self.seen {
            let what = match level {
                Level::Top => format!("duplicate option `{key}`"),
                Level::In(list) => format!("duplicate setting `{key}` in `{list}(...)`"),
            };
            cx.error(key.span(), format!("{what}; it is already set above"));
            return;
        }
        self.seen = true;
        self.value = value;
    }

    /// Whether the key was written at all, even with a value that was rejected.
    pub(crate) fn is_given(&self) -> bool {
        self.seen
    }

    /// Whether the key was written, and whether it holds a valid value.
    pub(crate) fn presence(&self) -> (bool, bool) {
        (self.seen, self.value.is_some())
    }

    pub(crate) fn get(&self) -> Option<&Opt<T>> {
        self.value.as_ref()
    }

    pub(crate) fn value_mut(&mut self) -> Option<&mut Opt<T>> {
        self.value.as_mut()
    }

    /// Drops a value that a rule in `valid` rejected, so the expansion goes on without it.
    pub(crate) fn clear(&mut self) {
        self.value = None;
    }
}

/// Where a key appears, for messages.
#[derive(Clone, Copy)]
enum Level {
    Top,
    In(&'static str),
}

impl Level {
    /// What a key is at this level: "option", or "`retry` setting".
    fn what(self) -> String {
        match self {
            Level::Top => "option".to_owned(),
            Level::In(list) => format!("`{list}` setting"),
        }
    }
}

/// `on_error = "..."`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnError {
    DeadLetter,
    Drop,
    Fail,
}

/// `breaker(mode = "...")`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Wait,
    FailFast,
}

/// `breaker(window = 20)` or `breaker(window = "30s")`.
#[derive(Clone, Copy)]
pub(crate) enum Window {
    Count(u32),
    Time(Duration),
}

/// A rate string, `"500/s"`.
#[derive(Clone, Copy)]
pub(crate) struct Rate {
    pub(crate) calls: u32,
    pub(crate) per: Duration,
}

/// `rate = "500/s"`, or `rate(limit = "500/s", burst = 50)`; `limit` is required.
#[derive(Default)]
pub(crate) struct RateLimit {
    pub(crate) limit: Slot<Rate>,
    pub(crate) burst: Slot<u32>,
}

/// `retry(...)`; `attempts` is required.
#[derive(Default)]
pub(crate) struct Retry {
    pub(crate) attempts: Slot<u32>,
    pub(crate) backoff: Slot<Duration>,
    pub(crate) max_backoff: Slot<Duration>,
    pub(crate) jitter: Slot<bool>,
    pub(crate) budget: Slot<f64>,
    pub(crate) budget_floor: Slot<u32>,
    pub(crate) when: Slot<Expr>,
}

/// `breaker(...)`; every setting has a default.
#[derive(Default)]
pub(crate) struct Breaker {
    pub(crate) failure_rate: Slot<f64>,
    pub(crate) slow_call_rate: Slot<f64>,
    pub(crate) slow_call: Slot<Duration>,
    pub(crate) window: Slot<Window>,
    pub(crate) min_calls: Slot<u32>,
    pub(crate) open_for: Slot<Duration>,
    pub(crate) half_open: Slot<u32>,
    pub(crate) mode: Slot<Mode>,
}

/// `restart(...)`; `max` and `within` are required.
#[derive(Default)]
pub(crate) struct Restart {
    pub(crate) max: Slot<u32>,
    pub(crate) within: Slot<Duration>,
    pub(crate) backoff: Slot<Duration>,
}

/// Everything `#[stage(...)]` said.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) name: Slot<LitStr>,
    pub(crate) concurrency: Slot<usize>,
    pub(crate) ordered: Slot<bool>,
    pub(crate) buffer: Slot<usize>,
    pub(crate) timeout: Slot<Duration>,
    pub(crate) retry: Slot<Retry>,
    pub(crate) breaker: Slot<Breaker>,
    pub(crate) rate: Slot<RateLimit>,
    pub(crate) on_error: Slot<OnError>,
    pub(crate) restart: Slot<Restart>,
    pub(crate) blocking: Slot<bool>,
    pub(crate) flatten: Slot<bool>,
    pub(crate) krate: Slot<syn::Path>,
}

impl Args {
    /// Whether a flag option is present and true.
    pub(crate) fn is_set(flag: &Slot<bool>) -> bool {
        flag.get().is_some_and(|opt| opt.value)
    }
}

/// Parses the attribute's arguments, reporting every problem to `cx`. A syntax error
/// stops the parse; the options read before it are kept. Required settings are checked
/// in `valid`.
pub(crate) fn parse(tokens: TokenStream, cx: &Ctxt) -> Args {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| option(&mut args, &meta, cx));
    if let Err(error) = parser.parse2(tokens) {
        cx.syn_error(error);
    }
    args
}

fn option(args: &mut Args, meta: &ParseNestedMeta<'_>, cx: &Ctxt) -> syn::Result<()> {
    let Some(e) = Entry::new(meta, cx, Level::Top, OPTIONS)? else {
        return Ok(());
    };
    let key = &e.key;
    match e.name().as_str() {
        "name" => e.value(&mut args.name, "name = \"enrich\"", |v| {
            let name = string(cx, v, "a name such as `\"enrich\"`")?;
            if name.value.value().is_empty() {
                cx.error(name.span, "the stage name must not be empty");
                return None;
            }
            Some(name)
        }),
        "concurrency" => e.value(&mut args.concurrency, "concurrency = 8", |v| {
            int(cx, key, v, 1)
        }),
        "buffer" => e.value(&mut args.buffer, "buffer = 256", |v| int(cx, key, v, 1)),
        "ordered" => e.flag(&mut args.ordered),
        "blocking" => e.flag(&mut args.blocking),
        "flatten" => e.flag(&mut args.flatten),
        "timeout" => e.value(&mut args.timeout, "timeout = \"2s\"", |v| {
            duration(cx, v, false)
        }),
        "rate" if e.has_value() => {
            // The short form, `rate = "500/s"`: the `limit` alone.
            let mut limit = RateLimit::default();
            e.value(&mut limit.limit, "rate = \"500/s\"", |v| rate(cx, v))?;
            let span = limit.limit.get().map(|o| o.span);
            e.store(&mut args.rate, span.map(|span| (span, limit)));
            Ok(())
        }
        "rate" => e.list(
            &mut args.rate,
            "rate(limit = \"500/s\", burst = 50)",
            |r, inner| rate_setting(r, &inner, cx),
        ),
        "on_error" => e.value(&mut args.on_error, "on_error = \"dead_letter\"", |v| {
            choice(cx, key, v, ON_ERROR)
        }),
        "retry" => e.list(&mut args.retry, "retry(attempts = 3)", |r, inner| {
            retry_setting(r, &inner, cx)
        }),
        "breaker" => e.list(
            &mut args.breaker,
            "breaker(failure_rate = 0.5)",
            |b, inner| breaker_setting(b, &inner, cx),
        ),
        "restart" => e.list(
            &mut args.restart,
            "restart(max = 3, within = \"60s\")",
            |r, inner| restart_setting(r, &inner, cx),
        ),
        "crate" => e.value(&mut args.krate, "crate = pipeline_core", |v| {
            crate_path(cx, v)
        }),
        other => {
            let lists: Vec<&str> = LISTS
                .iter()
                .filter(|(_, settings)| settings.contains(&other))
                .map(|(list, _)| *list)
                .collect();
            if lists.is_empty() {
                return e.unknown();
            }
            let names: Vec<String> = lists.iter().map(|l| format!("`{l}(...)`")).collect();
            cx.error(
                key.span(),
                format!(
                    "`{key}` is a setting of {}, not an option of its own: write it inside \
                     the parentheses, such as `{}(..., {key} = ...)`",
                    list_of(&names, " and "),
                    lists[0]
                ),
            );
            e.skip()
        }
    }
}

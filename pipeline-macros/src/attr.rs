//! Phase 1: `#[stage(...)]` parsed into raw values, each with the span of its key and of
//! its value. Only the syntax and the range of each value are checked here; rules that
//! involve several options or the function's signature live in `valid`.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Expr, Ident, LitStr};

use crate::ctxt::Ctxt;

mod settings;
mod values;

use settings::{breaker_setting, restart_setting, retry_setting};
use values::{
    choice, crate_path, duration, flag, int, list, list_of, rate, skip, string, unknown, value,
};

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
const RESTART: &[&str] = &["max", "within", "backoff"];
const ON_ERROR: &[&str] = &["dead_letter", "drop", "fail"];
const MODES: &[&str] = &["wait", "fail_fast"];

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

/// `rate = "500/s"`.
#[derive(Clone, Copy)]
pub(crate) struct Rate {
    pub(crate) calls: u32,
    pub(crate) per: Duration,
}

/// `retry(...)`; `attempts` is required.
#[derive(Default)]
pub(crate) struct Retry {
    pub(crate) attempts: Slot<u32>,
    pub(crate) backoff: Slot<Duration>,
    pub(crate) max_backoff: Slot<Duration>,
    pub(crate) jitter: Slot<bool>,
    pub(crate) budget: Slot<f64>,
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
    pub(crate) rate: Slot<Rate>,
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
/// stops the parse; the options read before it are kept.
pub(crate) fn parse(tokens: TokenStream, cx: &Ctxt) -> Args {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| option(&mut args, &meta, cx));
    if let Err(error) = parser.parse2(tokens) {
        cx.syn_error(error);
    }
    // `retry` without `attempts` and `restart` without `max`/`within` were reported
    // when parsed; an incomplete list is dropped so the expansion never sees it.
    if args
        .retry
        .get()
        .is_some_and(|r| r.value.attempts.get().is_none())
    {
        args.retry.clear();
    }
    if args
        .restart
        .get()
        .is_some_and(|r| r.value.max.get().is_none() || r.value.within.get().is_none())
    {
        args.restart.clear();
    }
    args
}

fn option(args: &mut Args, meta: &ParseNestedMeta<'_>, cx: &Ctxt) -> syn::Result<()> {
    let Some(key) = meta.path.get_ident().cloned() else {
        cx.error_spanned_by(&meta.path, unknown("option", &meta.path, OPTIONS));
        return skip(meta);
    };
    let top = Level::Top;
    match key.to_string().as_str() {
        "name" => {
            let v = value(meta, cx, &key, "name = \"enrich\"")?;
            let v = v.and_then(|e| string(cx, e, "a name such as `\"enrich\"`"));
            let v = v.and_then(|o| {
                if o.value.value().is_empty() {
                    cx.error(o.span, "the stage name must not be empty");
                    return None;
                }
                Some(o)
            });
            args.name.set(cx, &key, top, v.map(|o| o.keyed(&key)));
        }
        "concurrency" => {
            let v = value(meta, cx, &key, "concurrency = 8")?;
            let v = v.and_then(|e| int::<usize>(cx, &key, e, 1));
            args.concurrency
                .set(cx, &key, top, v.map(|o| o.keyed(&key)));
        }
        "buffer" => {
            let v = value(meta, cx, &key, "buffer = 256")?;
            let v = v.and_then(|e| int::<usize>(cx, &key, e, 1));
            args.buffer.set(cx, &key, top, v.map(|o| o.keyed(&key)));
        }
        "ordered" => {
            let v = flag(meta, cx, &key)?;
            args.ordered.set(cx, &key, top, v);
        }
        "blocking" => {
            let v = flag(meta, cx, &key)?;
            args.blocking.set(cx, &key, top, v);
        }
        "flatten" => {
            let v = flag(meta, cx, &key)?;
            args.flatten.set(cx, &key, top, v);
        }
        "timeout" => {
            let v = value(meta, cx, &key, "timeout = \"2s\"")?;
            let v = v.and_then(|e| duration(cx, e, false));
            args.timeout.set(cx, &key, top, v.map(|o| o.keyed(&key)));
        }
        "rate" => {
            let v = value(meta, cx, &key, "rate = \"500/s\"")?;
            let v = v.and_then(|e| rate(cx, e));
            args.rate.set(cx, &key, top, v.map(|o| o.keyed(&key)));
        }
        "on_error" => {
            let v = value(meta, cx, &key, "on_error = \"dead_letter\"")?;
            let v = v.and_then(|e| choice(cx, &key, e, ON_ERROR)).map(|o| Opt {
                key: key.span(),
                span: o.span,
                value: match o.value {
                    0 => OnError::DeadLetter,
                    1 => OnError::Drop,
                    _ => OnError::Fail,
                },
            });
            args.on_error.set(cx, &key, top, v);
        }
        "retry" => {
            let mut retry = Retry::default();
            let span = list(meta, cx, &key, "retry(attempts = 3)", |inner| {
                retry_setting(&mut retry, &inner, cx)
            })?;
            if span.is_some() && !retry.attempts.seen {
                cx.error(
                    key.span(),
                    "`retry` needs `attempts`, the number of attempts in all, the first \
                     included, such as `retry(attempts = 3)`",
                );
            }
            let v = span.map(|span| Opt {
                key: key.span(),
                span,
                value: retry,
            });
            args.retry.set(cx, &key, top, v);
        }
        "breaker" => {
            let mut breaker = Breaker::default();
            let span = list(meta, cx, &key, "breaker(failure_rate = 0.5)", |inner| {
                breaker_setting(&mut breaker, &inner, cx)
            })?;
            let v = span.map(|span| Opt {
                key: key.span(),
                span,
                value: breaker,
            });
            args.breaker.set(cx, &key, top, v);
        }
        "restart" => {
            let mut restart = Restart::default();
            let span = list(
                meta,
                cx,
                &key,
                "restart(max = 3, within = \"60s\")",
                |inner| restart_setting(&mut restart, &inner, cx),
            )?;
            let missing: Vec<&str> = [("max", &restart.max.seen), ("within", &restart.within.seen)]
                .into_iter()
                .filter(|(_, seen)| !**seen)
                .map(|(name, _)| name)
                .collect();
            if span.is_some() && !missing.is_empty() {
                cx.error(
                    key.span(),
                    format!(
                        "`restart` needs {}: at most `max` restarts `within` a window, such \
                         as `restart(max = 3, within = \"60s\")`",
                        list_of(&missing, " and ")
                    ),
                );
            }
            let v = span.map(|span| Opt {
                key: key.span(),
                span,
                value: restart,
            });
            args.restart.set(cx, &key, top, v);
        }
        "crate" => {
            let v = value(meta, cx, &key, "crate = pipeline_core")?;
            let v = v.and_then(|e| crate_path(cx, e));
            args.krate.set(cx, &key, top, v.map(|o| o.keyed(&key)));
        }
        other => {
            let lists: Vec<&str> = [("retry", RETRY), ("breaker", BREAKER), ("restart", RESTART)]
                .into_iter()
                .filter(|(_, settings)| settings.contains(&other))
                .map(|(list, _)| list)
                .collect();
            if lists.is_empty() {
                cx.error(key.span(), unknown("option", &key, OPTIONS));
            } else {
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
            }
            return skip(meta);
        }
    }
    Ok(())
}

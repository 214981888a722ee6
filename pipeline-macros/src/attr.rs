//! Phase 1: `#[stage(...)]` parsed into raw values, each with the span of its key and of
//! its value. Only the syntax and the range of each value are checked here; rules that
//! involve several options or the function's signature live in `valid`.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, LitStr, Token};

use crate::ctxt::Ctxt;

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
const RETRY: &[&str] = &["attempts", "backoff", "max_backoff", "jitter", "budget", "when"];
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
    if args.retry.get().is_some_and(|r| r.value.attempts.get().is_none()) {
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
            args.concurrency.set(cx, &key, top, v.map(|o| o.keyed(&key)));
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
            let span = list(meta, cx, &key, "restart(max = 3, within = \"60s\")", |inner| {
                restart_setting(&mut restart, &inner, cx)
            })?;
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

fn retry_setting(retry: &mut Retry, meta: &ParseNestedMeta<'_>, cx: &Ctxt) -> syn::Result<()> {
    let Some(key) = meta.path.get_ident().cloned() else {
        cx.error_spanned_by(&meta.path, unknown("`retry` setting", &meta.path, RETRY));
        return skip(meta);
    };
    let level = Level::In("retry");
    match key.to_string().as_str() {
        "attempts" => {
            let v = value(meta, cx, &key, "attempts = 3")?;
            let v = v.and_then(|e| int::<u32>(cx, &key, e, 1));
            retry.attempts.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "backoff" => {
            let v = value(meta, cx, &key, "backoff = \"100ms\"")?;
            let v = v.and_then(|e| duration(cx, e, true));
            retry.backoff.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "max_backoff" => {
            let v = value(meta, cx, &key, "max_backoff = \"10s\"")?;
            let v = v.and_then(|e| duration(cx, e, false));
            retry.max_backoff.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "jitter" => {
            let v = flag(meta, cx, &key)?;
            retry.jitter.set(cx, &key, level, v);
        }
        "budget" => {
            let v = value(meta, cx, &key, "budget = 0.2")?;
            let v = v.and_then(|e| share(cx, &key, e, "a share of recent first attempts"));
            retry.budget.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "when" => {
            let v = value(meta, cx, &key, "when = is_transient")?;
            let v = v.and_then(|e| predicate(cx, e));
            retry.when.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        _ => {
            cx.error(key.span(), unknown("`retry` setting", &key, RETRY));
            return skip(meta);
        }
    }
    Ok(())
}

fn breaker_setting(b: &mut Breaker, meta: &ParseNestedMeta<'_>, cx: &Ctxt) -> syn::Result<()> {
    let Some(key) = meta.path.get_ident().cloned() else {
        cx.error_spanned_by(&meta.path, unknown("`breaker` setting", &meta.path, BREAKER));
        return skip(meta);
    };
    let level = Level::In("breaker");
    match key.to_string().as_str() {
        "failure_rate" => {
            let v = value(meta, cx, &key, "failure_rate = 0.5")?;
            let v = v.and_then(|e| share(cx, &key, e, "the share of failed calls"));
            b.failure_rate.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "slow_call_rate" => {
            let v = value(meta, cx, &key, "slow_call_rate = 0.8")?;
            let v = v.and_then(|e| share(cx, &key, e, "the share of slow calls"));
            b.slow_call_rate.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "slow_call" => {
            let v = value(meta, cx, &key, "slow_call = \"1s\"")?;
            let v = v.and_then(|e| duration(cx, e, false));
            b.slow_call.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "window" => {
            let v = value(meta, cx, &key, "window = 20")?;
            let v = v.and_then(|e| window(cx, &key, e));
            b.window.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "min_calls" => {
            let v = value(meta, cx, &key, "min_calls = 10")?;
            let v = v.and_then(|e| int::<u32>(cx, &key, e, 1));
            b.min_calls.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "open_for" => {
            let v = value(meta, cx, &key, "open_for = \"30s\"")?;
            let v = v.and_then(|e| duration(cx, e, false));
            b.open_for.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "half_open" => {
            let v = value(meta, cx, &key, "half_open = 3")?;
            let v = v.and_then(|e| int::<u32>(cx, &key, e, 1));
            b.half_open.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "mode" => {
            let v = value(meta, cx, &key, "mode = \"wait\"")?;
            let v = v.and_then(|e| choice(cx, &key, e, MODES)).map(|o| Opt {
                key: key.span(),
                span: o.span,
                value: if o.value == 0 {
                    Mode::Wait
                } else {
                    Mode::FailFast
                },
            });
            b.mode.set(cx, &key, level, v);
        }
        _ => {
            cx.error(key.span(), unknown("`breaker` setting", &key, BREAKER));
            return skip(meta);
        }
    }
    Ok(())
}

fn restart_setting(r: &mut Restart, meta: &ParseNestedMeta<'_>, cx: &Ctxt) -> syn::Result<()> {
    let Some(key) = meta.path.get_ident().cloned() else {
        cx.error_spanned_by(&meta.path, unknown("`restart` setting", &meta.path, RESTART));
        return skip(meta);
    };
    let level = Level::In("restart");
    match key.to_string().as_str() {
        "max" => {
            let v = value(meta, cx, &key, "max = 3")?;
            let v = v.and_then(|e| int::<u32>(cx, &key, e, 0));
            r.max.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "within" => {
            let v = value(meta, cx, &key, "within = \"60s\"")?;
            let v = v.and_then(|e| duration(cx, e, false));
            r.within.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "backoff" => {
            let v = value(meta, cx, &key, "backoff = \"1s\"")?;
            let v = v.and_then(|e| duration(cx, e, true));
            r.backoff.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        _ => {
            cx.error(key.span(), unknown("`restart` setting", &key, RESTART));
            return skip(meta);
        }
    }
    Ok(())
}

// ---- shapes of an option: `key = value`, `key`, `key(...)` ----

/// A value parsed before its key is known, spanned on the value only.
struct Val<T> {
    span: Span,
    value: T,
}

impl<T> Val<T> {
    fn keyed(self, key: &Ident) -> Opt<T> {
        Opt {
            key: key.span(),
            span: self.span,
            value: self.value,
        }
    }
}

/// `key = <expr>`. Anything else is reported (naming the right form) and skipped.
fn value(
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
    key: &Ident,
    example: &str,
) -> syn::Result<Option<Expr>> {
    if meta.input.peek(Token![=]) {
        let expr: Expr = meta.value()?.parse()?;
        return Ok(Some(ungroup(expr)));
    }
    cx.error(key.span(), format!("`{key}` takes a value: write `{example}`"));
    skip(meta)?;
    Ok(None)
}

/// `key` alone (true) or `key = true|false`.
fn flag(meta: &ParseNestedMeta<'_>, cx: &Ctxt, key: &Ident) -> syn::Result<Option<Opt<bool>>> {
    if meta.input.peek(Token![=]) {
        let expr = ungroup(meta.value()?.parse()?);
        if let Expr::Lit(syn::ExprLit {
            lit: Lit::Bool(b), ..
        }) = &expr
        {
            return Ok(Some(Opt {
                key: key.span(),
                span: b.span,
                value: b.value,
            }));
        }
        cx.error_spanned_by(
            &expr,
            format!("`{key}` is a flag: write `{key}`, or `{key} = true` / `{key} = false`"),
        );
        return Ok(None);
    }
    if meta.input.peek(syn::token::Paren) {
        cx.error(key.span(), format!("`{key}` is a flag and takes no settings: write `{key}`"));
        skip(meta)?;
        return Ok(None);
    }
    Ok(Some(Opt {
        key: key.span(),
        span: key.span(),
        value: true,
    }))
}

/// `key(settings...)`, or `key` alone (no settings). Returns the span of the whole
/// option, or `None` if it had the wrong shape (reported).
fn list(
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
    key: &Ident,
    example: &str,
    each: impl FnMut(ParseNestedMeta<'_>) -> syn::Result<()>,
) -> syn::Result<Option<Span>> {
    if meta.input.peek(syn::token::Paren) {
        let span = meta.input.span();
        meta.parse_nested_meta(each)?;
        return Ok(Some(key.span().join(span).unwrap_or(span)));
    }
    if meta.input.peek(Token![=]) {
        cx.error(
            key.span(),
            format!("`{key}` takes settings in parentheses: write `{example}`"),
        );
        skip(meta)?;
        return Ok(None);
    }
    Ok(Some(key.span()))
}

/// Consumes whatever follows a rejected key, so the options after it are still checked.
fn skip(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}

// ---- values ----

fn ungroup(expr: Expr) -> Expr {
    match expr {
        Expr::Group(group) => ungroup(*group.expr),
        Expr::Paren(paren) => ungroup(*paren.expr),
        other => other,
    }
}

fn string(cx: &Ctxt, expr: Expr, what: &str) -> Option<Val<LitStr>> {
    if let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(lit), ..
    }) = &expr
    {
        return Some(Val {
            span: lit.span(),
            value: lit.clone(),
        });
    }
    cx.error_spanned_by(&expr, format!("expected a string literal: {what}"));
    None
}

fn int<T>(cx: &Ctxt, key: &Ident, expr: Expr, min: u64) -> Option<Val<T>>
where
    T: std::str::FromStr + TryFrom<u64>,
    T::Err: std::fmt::Display,
{
    if let Expr::Lit(syn::ExprLit {
        lit: Lit::Int(lit), ..
    }) = &expr
    {
        let parsed: Option<u64> = lit.base10_parse::<u64>().ok();
        match parsed.and_then(|n| T::try_from(n).ok().map(|t| (n, t))) {
            Some((n, _)) if n < min => {
                cx.error(lit.span(), format!("`{key}` must be at least {min}"));
            }
            Some((_, value)) => {
                return Some(Val {
                    span: lit.span(),
                    value,
                });
            }
            None => cx.error(lit.span(), format!("`{key}` is out of range")),
        }
        return None;
    }
    let floor = if min == 0 { "a whole number" } else { "a positive whole number" };
    cx.error_spanned_by(&expr, format!("expected {floor} for `{key}`, such as `{key} = 3`"));
    None
}

/// A number between 0 and 1 (a share or a rate).
fn share(cx: &Ctxt, key: &Ident, expr: Expr, what: &str) -> Option<Val<f64>> {
    let value = match &expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Float(lit),
            ..
        }) => lit.base10_parse::<f64>().ok(),
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit.base10_parse::<u32>().ok().map(f64::from),
        _ => None,
    };
    match value {
        Some(v) if (0.0..=1.0).contains(&v) => Some(Val {
            span: expr.span(),
            value: v,
        }),
        _ => {
            cx.error_spanned_by(
                &expr,
                format!(
                    "`{key}` is {what}: expected a number from `0.0` to `1.0`, such as `{key} = 0.5`"
                ),
            );
            None
        }
    }
}

/// The index in `choices` of a string literal.
fn choice(cx: &Ctxt, key: &Ident, expr: Expr, choices: &[&str]) -> Option<Val<usize>> {
    let expected = list_of(&quoted(choices), ", ");
    let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(lit), ..
    }) = &expr
    else {
        cx.error_spanned_by(
            &expr,
            format!("expected a string literal for `{key}`: one of {expected}"),
        );
        return None;
    };
    let text = lit.value();
    if let Some(index) = choices.iter().position(|c| *c == text) {
        return Some(Val {
            span: lit.span(),
            value: index,
        });
    }
    cx.error(
        lit.span(),
        format!("unknown `{key}` value `\"{text}\"`; expected one of {expected}"),
    );
    None
}

fn duration(cx: &Ctxt, expr: Expr, zero_ok: bool) -> Option<Val<Duration>> {
    let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(lit), ..
    }) = &expr
    else {
        cx.error_spanned_by(
            &expr,
            "expected a duration string such as `\"250ms\"`, `\"2s\"` or `\"1m 30s\"`",
        );
        return None;
    };
    match parse_duration(&lit.value()) {
        Ok(d) if d.is_zero() && !zero_ok => {
            cx.error(lit.span(), "this duration must be greater than zero");
            None
        }
        Ok(d) => Some(Val {
            span: lit.span(),
            value: d,
        }),
        Err(message) => {
            cx.error(lit.span(), message);
            None
        }
    }
}

/// A humantime duration, without month and year units (humantime reads `1M` as 30.44
/// days, which nobody writing a timeout means).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut unit = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_alphabetic() {
            unit.push(c);
            continue;
        }
        match unit.as_str() {
            "M" => {
                return Err(format!(
                    "`M` in `\"{text}\"` means months; write `m` for minutes, or days such as \
                     `\"30d\"` (month and year units are not allowed: they have no fixed length)"
                ));
            }
            "month" | "months" => {
                return Err(format!(
                    "month units are not allowed in `\"{text}\"` (a month has no fixed length); \
                     write days instead, such as `\"30d\"`"
                ));
            }
            "y" | "yr" | "yrs" | "year" | "years" => {
                return Err(format!(
                    "year units are not allowed in `\"{text}\"` (a year has no fixed length); \
                     write days instead, such as `\"365d\"`"
                ));
            }
            _ => unit.clear(),
        }
    }
    humantime::parse_duration(text).map_err(|error| {
        format!(
            "invalid duration `\"{text}\"`: {error}; expected a number and a unit, such as \
             `\"250ms\"`, `\"2s\"` or `\"1m 30s\"` (units: `ns`, `us`, `ms`, `s`, `m`, `h`, `d`, `w`)"
        )
    })
}

fn rate(cx: &Ctxt, expr: Expr) -> Option<Val<Rate>> {
    let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(lit), ..
    }) = &expr
    else {
        cx.error_spanned_by(&expr, "expected a rate string such as `\"500/s\"`");
        return None;
    };
    match parse_rate(&lit.value()) {
        Ok(value) => Some(Val {
            span: lit.span(),
            value,
        }),
        Err(message) => {
            cx.error(lit.span(), message);
            None
        }
    }
}

/// `"N/s"`, `"N/m"`, `"N/h"`, or `"N/<duration>"` such as `"10/100ms"`.
pub(crate) fn parse_rate(text: &str) -> Result<Rate, String> {
    let expected = "expected calls per period: `\"N/s\"`, `\"N/m\"` or `\"N/h\"`, such as \
                    `\"500/s\"`, or calls per duration, such as `\"10/100ms\"`";
    let Some((calls, per)) = text.split_once('/') else {
        return Err(format!("invalid rate `\"{text}\"`: {expected}"));
    };
    let calls = match calls.trim().parse::<u32>() {
        Ok(0) => return Err(format!("invalid rate `\"{text}\"`: the number of calls must be at least 1")),
        Ok(n) => n,
        Err(_) => return Err(format!("invalid rate `\"{text}\"`: {expected}")),
    };
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other if other.starts_with(|c: char| c.is_ascii_digit()) => {
            match parse_duration(other) {
                Ok(d) if d.is_zero() => {
                    return Err(format!("invalid rate `\"{text}\"`: the period must be greater than zero"));
                }
                Ok(d) => d,
                Err(message) => return Err(message),
            }
        }
        "M" | "month" | "y" | "year" => {
            return Err(format!(
                "invalid rate `\"{text}\"`: month and year periods are not allowed; {expected}"
            ));
        }
        _ => return Err(format!("invalid rate `\"{text}\"`: {expected}")),
    };
    Ok(Rate { calls, per })
}

fn window(cx: &Ctxt, key: &Ident, expr: Expr) -> Option<Val<Window>> {
    match &expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(_), ..
        }) => int::<u32>(cx, key, expr, 1).map(|v| Val {
            span: v.span,
            value: Window::Count(v.value),
        }),
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(_), ..
        }) => duration(cx, expr, false).map(|v| Val {
            span: v.span,
            value: Window::Time(v.value),
        }),
        _ => {
            cx.error_spanned_by(
                &expr,
                "expected a number of calls (`window = 20`) or a duration (`window = \"30s\"`)",
            );
            None
        }
    }
}

/// `when = path::to::predicate` or `when = |e| ...`.
fn predicate(cx: &Ctxt, expr: Expr) -> Option<Val<Expr>> {
    match &expr {
        Expr::Path(_) | Expr::Closure(_) => Some(Val {
            span: expr.span(),
            value: expr,
        }),
        _ => {
            cx.error_spanned_by(
                &expr,
                "expected the path of a function `fn(&Error) -> bool` that returns true for \
                 retryable errors, or a closure, such as `when = is_transient`",
            );
            None
        }
    }
}

fn crate_path(cx: &Ctxt, expr: Expr) -> Option<Val<syn::Path>> {
    match &expr {
        Expr::Path(p) if p.qself.is_none() => Some(Val {
            span: expr.span(),
            value: p.path.clone(),
        }),
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => match lit.parse::<syn::Path>() {
            Ok(path) => Some(Val {
                span: lit.span(),
                value: path,
            }),
            Err(_) => {
                cx.error(lit.span(), "expected a path, such as `crate = my_pipeline`");
                None
            }
        },
        _ => {
            cx.error_spanned_by(&expr, "expected a path, such as `crate = my_pipeline`");
            None
        }
    }
}

// ---- messages ----

fn unknown(what: &str, key: &dyn quote::ToTokens, choices: &[&str]) -> String {
    let text = key.to_token_stream().to_string().replace(' ', "");
    let expected = list_of(&quoted_code(choices), ", ");
    match closest(&text, choices) {
        Some(guess) => format!("unknown {what} `{text}` (did you mean `{guess}`?); expected one of {expected}"),
        None => format!("unknown {what} `{text}`; expected one of {expected}"),
    }
}

fn quoted(choices: &[&str]) -> Vec<String> {
    choices.iter().map(|c| format!("`\"{c}\"`")).collect()
}

fn quoted_code(choices: &[&str]) -> Vec<String> {
    choices.iter().map(|c| format!("`{c}`")).collect()
}

fn list_of<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    items.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(sep)
}

/// The choice within edit distance 2 of `text`, if one is that close.
fn closest<'a>(text: &str, choices: &[&'a str]) -> Option<&'a str> {
    choices
        .iter()
        .map(|c| (levenshtein(text, c), *c))
        .filter(|(d, c)| *d <= 3.min(text.len().max(c.len()) / 2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("1M").unwrap_err().contains("months"));
        assert!(parse_duration("2years").unwrap_err().contains("year units"));
        assert!(parse_duration("3y").unwrap_err().contains("year units"));
        assert!(parse_duration("2 secs and").is_err());
    }

    #[test]
    fn rates() {
        let r = parse_rate("500/s").unwrap();
        assert_eq!((r.calls, r.per), (500, Duration::from_secs(1)));
        let r = parse_rate("10/100ms").unwrap();
        assert_eq!((r.calls, r.per), (10, Duration::from_millis(100)));
        let r = parse_rate("60/m").unwrap();
        assert_eq!(r.per, Duration::from_secs(60));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("500 per second").is_err());
        assert!(parse_rate("5/M").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("retires", OPTIONS), Some("retry"));
        assert_eq!(closest("concurency", OPTIONS), Some("concurrency"));
        assert_eq!(closest("xyz", OPTIONS), None);
    }
}

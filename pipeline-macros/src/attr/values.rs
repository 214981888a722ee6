//! Values of options: the shapes `key = value`, `key` and `key(...)`, literals,
//! durations, rates, and the messages about them.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, LitStr, Token};

use super::{Opt, Rate, Window};
use crate::ctxt::Ctxt;

// ---- shapes of an option: `key = value`, `key`, `key(...)` ----

/// A value parsed before its key is known, spanned on the value only.
pub(super) struct Val<T> {
    pub(super) span: Span,
    pub(super) value: T,
}

impl<T> Val<T> {
    pub(super) fn keyed(self, key: &Ident) -> Opt<T> {
        Opt {
            key: key.span(),
            span: self.span,
            value: self.value,
        }
    }
}

/// `key = <expr>`. Anything else is reported (naming the right form) and skipped.
pub(super) fn value(
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
    key: &Ident,
    example: &str,
) -> syn::Result<Option<Expr>> {
    if meta.input.peek(Token![=]) {
        let expr: Expr = meta.value()?.parse()?;
        return Ok(Some(ungroup(expr)));
    }
    cx.error(
        key.span(),
        format!("`{key}` takes a value: write `{example}`"),
    );
    skip(meta)?;
    Ok(None)
}

/// `key` alone (true) or `key = true|false`.
pub(super) fn flag(
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
    key: &Ident,
) -> syn::Result<Option<Opt<bool>>> {
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
        cx.error(
            key.span(),
            format!("`{key}` is a flag and takes no settings: write `{key}`"),
        );
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
pub(super) fn list(
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
pub(super) fn skip(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
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

pub(super) fn ungroup(expr: Expr) -> Expr {
    match expr {
        Expr::Group(group) => ungroup(*group.expr),
        Expr::Paren(paren) => ungroup(*paren.expr),
        other => other,
    }
}

/// The string literal `expr` is, or `None` once `expected` is reported on it.
fn str_lit<'e>(cx: &Ctxt, expr: &'e Expr, expected: impl std::fmt::Display) -> Option<&'e LitStr> {
    if let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(lit), ..
    }) = expr
    {
        return Some(lit);
    }
    cx.error_spanned_by(expr, expected);
    None
}

/// A string literal read by `parse`, whose error message is reported on the literal.
fn parsed<T>(
    cx: &Ctxt,
    lit: &LitStr,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<Val<T>> {
    match parse(&lit.value()) {
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

pub(super) fn string(cx: &Ctxt, expr: Expr, what: &str) -> Option<Val<LitStr>> {
    let lit = str_lit(cx, &expr, format!("expected a string literal: {what}"))?;
    Some(Val {
        span: lit.span(),
        value: lit.clone(),
    })
}

pub(super) fn int<T>(cx: &Ctxt, key: &Ident, expr: Expr, min: u64) -> Option<Val<T>>
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
    let floor = if min == 0 {
        "a whole number"
    } else {
        "a positive whole number"
    };
    cx.error_spanned_by(
        &expr,
        format!("expected {floor} for `{key}`, such as `{key} = 3`"),
    );
    None
}

/// A number between 0 and 1 (a share or a rate).
pub(super) fn share(cx: &Ctxt, key: &Ident, expr: Expr, what: &str) -> Option<Val<f64>> {
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

/// The meaning of a string literal, looked up by name in `choices`.
pub(super) fn choice<T: Copy>(
    cx: &Ctxt,
    key: &Ident,
    expr: Expr,
    choices: &[(&str, T)],
) -> Option<Val<T>> {
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let expected = list_of(&quoted(&names), ", ");
    let lit = str_lit(
        cx,
        &expr,
        format!("expected a string literal for `{key}`: one of {expected}"),
    )?;
    let text = lit.value();
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
        return Some(Val {
            span: lit.span(),
            value: *value,
        });
    }
    cx.error(
        lit.span(),
        format!("unknown `{key}` value `\"{text}\"`; expected one of {expected}"),
    );
    None
}

pub(super) fn duration(cx: &Ctxt, expr: Expr, zero_ok: bool) -> Option<Val<Duration>> {
    let lit = str_lit(
        cx,
        &expr,
        "expected a duration string such as `\"250ms\"`, `\"2s\"` or `\"1m 30s\"`",
    )?;
    parsed(cx, lit, |text| match parse_duration(text) {
        Ok(d) if d.is_zero() && !zero_ok => Err("this duration must be greater than zero".into()),
        other => other,
    })
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
        // humantime's own text for an unknown unit lists months and years, which are
        // rejected above: say what is wrong in our words, with the units we accept.
        let problem = match error {
            humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                format!("`{value}` has no unit")
            }
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!("unknown unit `{unit}`")
            }
            humantime::DurationError::InvalidCharacter(at) => {
                format!("unexpected character at byte {at}")
            }
            humantime::DurationError::NumberExpected(at) => {
                format!("expected a number at byte {at}")
            }
            humantime::DurationError::NumberOverflow => {
                "the number is too large, or finer than a nanosecond".to_owned()
            }
            humantime::DurationError::Empty => "it is empty".to_owned(),
        };
        format!(
            "invalid duration `\"{text}\"`: {problem}; expected a number and a unit, such as \
             `\"250ms\"`, `\"2s\"` or `\"1m 30s\"` (units: {DURATION_UNITS})"
        )
    })
}

/// The units `parse_duration` accepts, for messages (humantime's less months and years).
pub(crate) const DURATION_UNITS: &str = "`ns`, `us`, `ms`, `s` or `sec`, `m` or `min`, \
                                          `h` or `hr`, `d` or `day`, `w` or `week`";

pub(super) fn rate(cx: &Ctxt, expr: Expr) -> Option<Val<Rate>> {
    let lit = str_lit(cx, &expr, "expected a rate string such as `\"500/s\"`")?;
    parsed(cx, lit, parse_rate)
}

/// `"N/s"`, `"N/m"`, `"N/h"`, or `"N/<duration>"` such as `"10/100ms"`.
pub(crate) fn parse_rate(text: &str) -> Result<Rate, String> {
    let expected = "expected calls per period: `\"N/s\"`, `\"N/m\"` or `\"N/h\"`, such as \
                    `\"500/s\"`, or calls per duration, such as `\"10/100ms\"`";
    let Some((calls, per)) = text.split_once('/') else {
        return Err(format!("invalid rate `\"{text}\"`: {expected}"));
    };
    let calls = match calls.trim().parse::<u32>() {
        Ok(0) => {
            return Err(format!(
                "invalid rate `\"{text}\"`: the number of calls must be at least 1"
            ));
        }
        Ok(n) => n,
        Err(_) => return Err(format!("invalid rate `\"{text}\"`: {expected}")),
    };
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other if other.starts_with(|c: char| c.is_ascii_digit()) => match parse_duration(other) {
            Ok(d) if d.is_zero() => {
                return Err(format!(
                    "invalid rate `\"{text}\"`: the period must be greater than zero"
                ));
            }
            Ok(d) => d,
            Err(message) => return Err(message),
        },
        "M" | "month" | "y" | "year" => {
            return Err(format!(
                "invalid rate `\"{text}\"`: month and year periods are not allowed; {expected}"
            ));
        }
        _ => return Err(format!("invalid rate `\"{text}\"`: {expected}")),
    };
    Ok(Rate { calls, per })
}

pub(super) fn window(cx: &Ctxt, key: &Ident, expr: Expr) -> Option<Val<Window>> {
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
pub(super) fn predicate(cx: &Ctxt, expr: Expr) -> Option<Val<Expr>> {
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

pub(super) fn crate_path(cx: &Ctxt, expr: Expr) -> Option<Val<syn::Path>> {
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

pub(super) fn unknown(what: &str, key: &dyn quote::ToTokens, choices: &[&str]) -> String {
    let text = key.to_token_stream().to_string().replace(' ', "");
    let expected = list_of(&quoted_code(choices), ", ");
    match closest(&text, choices) {
        Some(guess) => {
            format!("unknown {what} `{text}` (did you mean `{guess}`?); expected one of {expected}")
        }
        None => format!("unknown {what} `{text}`; expected one of {expected}"),
    }
}

pub(super) fn quoted(choices: &[&str]) -> Vec<String> {
    choices.iter().map(|c| format!("`\"{c}\"`")).collect()
}

pub(super) fn quoted_code(choices: &[&str]) -> Vec<String> {
    choices.iter().map(|c| format!("`{c}`")).collect()
}

pub(crate) fn list_of<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(sep)
}

/// The choice within edit distance 2 of `text`, if one is that close.
pub(super) fn closest<'a>(text: &str, choices: &[&'a str]) -> Option<&'a str> {
    choices
        .iter()
        .map(|c| (levenshtein(text, c), *c))
        .filter(|(d, c)| *d <= 3.min(text.len().max(c.len()) / 2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(super) fn levenshtein(a: &str, b: &str) -> usize {
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
    use crate::attr::OPTIONS;

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

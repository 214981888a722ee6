//! The settings inside `retry(...)`, `breaker(...)` and `restart(...)`.

use syn::meta::ParseNestedMeta;

use super::values::{choice, duration, flag, int, predicate, share, skip, unknown, value, window};
use super::{BREAKER, Breaker, Level, MODES, Mode, Opt, RESTART, RETRY, Restart, Retry};
use crate::ctxt::Ctxt;

pub(super) fn retry_setting(
    retry: &mut Retry,
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
) -> syn::Result<()> {
    let Some(key) = meta.path.get_ident().cloned() else {
        cx.error_spanned_by(&meta.path, unknown("`retry` setting", &meta.path, RETRY));
        return skip(meta);
    };
    let level = Level::In("retry");
    match key.to_string().as_str() {
        "attempts" => {
            let v = value(meta, cx, &key, "attempts = 3")?;
            let v = v.and_then(|e| int::<u32>(cx, &key, e, 1));
            retry
                .attempts
                .set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "backoff" => {
            let v = value(meta, cx, &key, "backoff = \"100ms\"")?;
            let v = v.and_then(|e| duration(cx, e, true));
            retry.backoff.set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "max_backoff" => {
            let v = value(meta, cx, &key, "max_backoff = \"10s\"")?;
            let v = v.and_then(|e| duration(cx, e, false));
            retry
                .max_backoff
                .set(cx, &key, level, v.map(|o| o.keyed(&key)));
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

pub(super) fn breaker_setting(
    b: &mut Breaker,
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
) -> syn::Result<()> {
    let Some(key) = meta.path.get_ident().cloned() else {
        cx.error_spanned_by(
            &meta.path,
            unknown("`breaker` setting", &meta.path, BREAKER),
        );
        return skip(meta);
    };
    let level = Level::In("breaker");
    match key.to_string().as_str() {
        "failure_rate" => {
            let v = value(meta, cx, &key, "failure_rate = 0.5")?;
            let v = v.and_then(|e| share(cx, &key, e, "the share of failed calls"));
            b.failure_rate
                .set(cx, &key, level, v.map(|o| o.keyed(&key)));
        }
        "slow_call_rate" => {
            let v = value(meta, cx, &key, "slow_call_rate = 0.8")?;
            let v = v.and_then(|e| share(cx, &key, e, "the share of slow calls"));
            b.slow_call_rate
                .set(cx, &key, level, v.map(|o| o.keyed(&key)));
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

pub(super) fn restart_setting(
    r: &mut Restart,
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
) -> syn::Result<()> {
    let Some(key) = meta.path.get_ident().cloned() else {
        cx.error_spanned_by(
            &meta.path,
            unknown("`restart` setting", &meta.path, RESTART),
        );
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

//! Phase 2: a checked view of the annotated function: which argument is the input, which
//! are state or the context, and what the return type says about output, shape and error.
//! Rules that also involve the options live in `valid`.

use std::cell::Cell;

use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericParam, Ident, ItemFn, Pat, PatType, ReturnType, Signature, Token, Type,
    Visibility,
};

use crate::ctxt::Ctxt;

mod types;

use types::{at, borrowed, input_type, is_context, output, ungroup};

/// The function, understood.
pub(crate) struct StageFn {
    pub(crate) vis: Visibility,
    /// The function's name.
    pub(crate) ident: Ident,
    /// The generated stage type's name, spanned on the function's name.
    pub(crate) type_ident: Ident,
    pub(crate) asyncness: Option<Token![async]>,
    pub(crate) fn_token: Token![fn],
    /// Every argument, in order.
    pub(crate) args: Vec<Arg>,
    /// The type the stage consumes (`Stage::In`).
    pub(crate) input: Type,
    pub(crate) output: Output,
}

impl StageFn {
    pub(crate) fn shared_state(&self) -> impl Iterator<Item = &State> {
        self.args.iter().filter_map(|arg| match arg {
            Arg::Shared(state) => Some(state),
            _ => None,
        })
    }

    pub(crate) fn mut_state(&self) -> impl Iterator<Item = &State> {
        self.args.iter().filter_map(|arg| match arg {
            Arg::Mut(state) => Some(state),
            _ => None,
        })
    }

    pub(crate) fn has_state(&self) -> bool {
        self.args
            .iter()
            .any(|arg| matches!(arg, Arg::Shared(_) | Arg::Mut(_)))
    }

    pub(crate) fn has_mut_state(&self) -> bool {
        self.mut_state().next().is_some()
    }
}

/// One argument of the function.
pub(crate) enum Arg {
    /// The item: `order: Order` (`by_ref: false`) or `line: &str` (`by_ref: true`).
    Input { by_ref: bool },
    /// `cx: &Context`.
    Context,
    /// `#[state] db: &Db`: given to `new`, shared by every call.
    Shared(State),
    /// `#[state] seen: &mut Seen`: built by a factory given to `new`, one per stage.
    Mut(State),
}

/// A `#[state]` argument.
pub(crate) struct State {
    /// The field of the stage struct and the parameter of `new`.
    pub(crate) field: Ident,
    /// The state type, without the reference.
    pub(crate) ty: Type,
}

/// What the return type says.
pub(crate) struct Output {
    /// `Stage::Output`: the `T` of `Result<T, E>`, or the whole type when infallible.
    pub(crate) ty: Type,
    /// `Stage::Error`; `None` when the function returns no `Result`.
    pub(crate) error: Option<Type>,
    /// The output is literally `Option<_>` (a filter, unless `flatten`).
    pub(crate) option: bool,
}

/// What `check` could make of the function.
pub(crate) struct Checked {
    /// The full view, when the signature has no error.
    pub(crate) stage: Option<StageFn>,
    /// What a stub stage type needs, when one can be emitted at all (not for methods).
    pub(crate) stub: Option<(Visibility, Ident)>,
}

/// Strips the `#[state]` markers from `item` (the function is emitted without them),
/// validates the signature's form, then builds the view of its arguments and return
/// type. Each step reports what it finds wrong and goes on, so every mistake is seen.
pub(crate) fn check(item: &mut ItemFn, cx: &Ctxt) -> Checked {
    let state_markers = strip_state_markers(item);
    let sig = &item.sig;
    let faults = Faults {
        cx,
        ok: Cell::new(true),
    };

    // A method gets no stub either: it sits in an `impl`, where a struct cannot.
    if !validate_form(sig, &faults) {
        return Checked {
            stage: None,
            stub: None,
        };
    }
    let type_ident = type_name(sig, &faults);
    let (args, input) = arguments(sig, &state_markers, &faults);
    let output = return_type(sig, &faults);

    let stub = type_ident.clone().map(|ident| (item.vis.clone(), ident));
    let stage = match (faults.ok.get(), type_ident, input, output) {
        (true, Some(type_ident), Some(input), Some(output)) => Some(StageFn {
            vis: item.vis.clone(),
            ident: sig.ident.clone(),
            type_ident,
            asyncness: sig.asyncness,
            fn_token: sig.fn_token,
            args,
            input,
            output,
        }),
        _ => None,
    };
    Checked { stage, stub }
}

/// Reports problems with the signature and remembers that there were some.
struct Faults<'a> {
    cx: &'a Ctxt,
    ok: Cell<bool>,
}

impl Faults<'_> {
    /// Spans every token of `at`, first to last.
    fn report(&self, at: &dyn ToTokens, message: &str) {
        self.ok.set(false);
        self.cx.error_spanned_by(at, message);
    }
}

/// Validation of what a stage function cannot be: a method, generic, `unsafe`, `extern`,
/// variadic. Returns `false` for a method, about which nothing more is said.
fn validate_form(sig: &Signature, faults: &Faults<'_>) -> bool {
    if let Some(receiver) = sig.receiver() {
        faults.report(
            &receiver.self_token,
            "`#[stage]` goes on a free function, not a method: `self` is not supported; \
             pass shared data as a `#[state]` argument instead, such as `#[state] db: &Db`",
        );
        return false;
    }
    for param in &sig.generics.params {
        match param {
            GenericParam::Type(t) => faults.report(
                &t.ident,
                "generic functions cannot be stages: the stage type must name its input, \
                 output and error types; write a concrete type, or a small non-generic \
                 function that calls this one",
            ),
            GenericParam::Const(c) => faults.report(
                &c.ident,
                "const generic parameters are not supported in a stage function; write a \
                 concrete value",
            ),
            // Lifetimes are fine: the macro never names them.
            GenericParam::Lifetime(_) => {}
        }
    }
    if let syn::Safety::Unsafe(token) = &sig.safety {
        faults.report(
            token,
            "a stage function cannot be `unsafe`: the stage calls it with no way to uphold \
             its contract; wrap the unsafe call in a safe function",
        );
    }
    if let Some(abi) = &sig.abi {
        faults.report(
            &abi.extern_token,
            "a stage function cannot have an `extern` ABI; remove it",
        );
    }
    if let Some(variadic) = &sig.variadic {
        faults.report(&variadic.dots, "a stage function cannot be variadic");
    }
    true
}

/// The stage type's name: the function's, in UpperCamelCase, spanned on it.
fn type_name(sig: &Signature, faults: &Faults<'_>) -> Option<Ident> {
    match upper_camel(&sig.ident) {
        Some(name) if name != sig.ident.to_string().trim_start_matches("r#") => {
            Some(Ident::new(&name, sig.ident.span()))
        }
        _ => {
            faults.report(
                &sig.ident,
                "cannot name the stage type after this function: `#[stage]` turns a \
                 snake_case name into UpperCamelCase (`enrich` -> `Enrich`); rename the \
                 function in snake_case",
            );
            None
        }
    }
}

/// Every argument understood: the one input, the context, the state. Returns them with
/// the input's type (`Stage::In`), or `None` when there is no input.
fn arguments(
    sig: &Signature,
    state_markers: &[bool],
    faults: &Faults<'_>,
) -> (Vec<Arg>, Option<Type>) {
    let mut args = Vec::new();
    let mut input: Option<Type> = None;
    let mut context_seen = false;
    for (index, (arg, marked)) in sig.inputs.iter().zip(state_markers).enumerate() {
        let FnArg::Typed(pat_type) = arg else {
            continue;
        };
        let ty = ungroup(&pat_type.ty);
        if *marked {
            args.extend(state_arg(pat_type, index, faults));
            continue;
        }
        if is_context(ty) {
            if context_seen {
                faults.report(ty, "a stage takes at most one `&Context` argument");
            }
            context_seen = true;
            args.push(Arg::Context);
            continue;
        }
        if input.is_some() {
            faults.report(
                &pat_type.pat,
                "a stage takes exactly one input, and this is a second one; mark state with \
                 `#[state]`, or take one struct or tuple holding both values",
            );
            continue;
        }
        match input_type(ty) {
            Ok((in_ty, by_ref)) => {
                input = Some(in_ty);
                args.push(Arg::Input { by_ref });
            }
            Err((at, message)) => {
                faults.report(&at, message);
                // Still an input, so no "missing input" error follows.
                input = Some(ty.clone());
            }
        }
    }
    if input.is_none() {
        faults.report(
            &at(sig.paren_token.span.join()),
            "a stage function takes one input argument, such as `order: Order` or `line: &str`",
        );
    }
    (args, input)
}

/// A `#[state]` argument: `&S` (shared) or `&mut S` (per-stage), else reported.
fn state_arg(pat_type: &PatType, index: usize, faults: &Faults<'_>) -> Option<Arg> {
    let field = match &*pat_type.pat {
        Pat::Ident(p) => p.ident.clone(),
        _ => Ident::new(&format!("state{index}"), pat_type.pat.span()),
    };
    let Type::Reference(r) = ungroup(&pat_type.ty) else {
        faults.report(
            ungroup(&pat_type.ty),
            "a `#[state]` argument is a reference: `&S` for state shared by every call \
             (given to `new`), or `&mut S` for per-stage state (built by a factory given to \
             `new`)",
        );
        return None;
    };
    let ty = ungroup(&r.elem).clone();
    if let Some(span) = borrowed(&ty) {
        faults.report(&at(span), BORROWED_STATE);
    }
    if r.mutability.is_none() {
        return Some(Arg::Shared(State { field, ty }));
    }
    if matches!(ty, Type::Slice(_)) || matches!(&ty, Type::Path(p) if p.path.is_ident("str")) {
        faults.report(
            &ty,
            "mutable state must be a sized type built by a factory: use `&mut String` or \
             `&mut Vec<T>`",
        );
    }
    Some(Arg::Mut(State { field, ty }))
}

/// What the return type says, or `None` when it cannot be a stage's (reported).
fn return_type(sig: &Signature, faults: &Faults<'_>) -> Option<Output> {
    match &sig.output {
        ReturnType::Default => {
            faults.report(
                &at(sig.paren_token.span.close()),
                "a stage function returns its output: add `-> T` (one item), \
                 `-> Option<T>` (a filter) or `-> Result<T, E>` (fallible)",
            );
            None
        }
        ReturnType::Type(_, ty) => match output(ty) {
            Ok(output) => Some(output),
            Err((at, message)) => {
                faults.report(&at, &message);
                None
            }
        },
    }
}

const BORROWED_STATE: &str = "state cannot borrow from elsewhere: the stage keeps it for as \
                              long as it runs; own the data (`String`, `Arc<T>`)";

/// Removes `#[state]` from every argument; returns, per argument, whether it had one.
fn strip_state_markers(item: &mut ItemFn) -> Vec<bool> {
    item.sig
        .inputs
        .iter_mut()
        .map(|arg| match arg {
            FnArg::Typed(pat_type) => {
                let before = pat_type.attrs.len();
                pat_type.attrs.retain(|attr| !attr.path().is_ident("state"));
                pat_type.attrs.len() != before
            }
            FnArg::Receiver(_) => false,
        })
        .collect()
}

/// `enrich_order` -> `EnrichOrder`; `None` if nothing is left.
fn upper_camel(ident: &Ident) -> Option<String> {
    let name = ident.to_string();
    let name = name.trim_start_matches("r#");
    let mut out = String::new();
    for part in name.split('_').filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    (!out.is_empty()).then_some(out)
}

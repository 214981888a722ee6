//! Phase 2: a checked view of the annotated function: which argument is the input, which
//! are state or the context, and what the return type says about output, shape and error.
//! Rules that also involve the options live in `valid`.

use std::cell::Cell;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PatType, PathArguments, ReturnType,
    Signature, Token, Type, Visibility,
};

use crate::ctxt::Ctxt;

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

fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        other => other,
    }
}

/// `&Context` (any path ending in `Context`, any lifetime).
fn is_context(ty: &Type) -> bool {
    let Type::Reference(r) = ty else {
        return false;
    };
    if r.mutability.is_some() {
        return false;
    }
    matches!(ungroup(&r.elem), Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Context" && s.arguments.is_none()))
}

/// `Stage::In` for an input argument, and whether the function takes it by reference.
/// `&str` and `&[T]` become `String` and `Vec<T>` (the call derefs them back).
fn input_type(ty: &Type) -> Result<(Type, bool), (TokenStream, &'static str)> {
    const BORROWED: &str = "a stage input must be owned, or a plain reference to an owned \
                            type (`&T`): the item moves between tasks and outlives this call; \
                            take `String` instead of `Cow<'a, str>`, `Arc<T>` instead of `&'a T`";
    if let Type::Reference(r) = ty {
        if r.mutability.is_some() {
            return Err((
                r.mutability.to_token_stream(),
                "a stage input cannot be `&mut`: take it by value (`T`) and return what \
                 changed",
            ));
        }
        let elem = ungroup(&r.elem);
        if let Some(span) = borrowed(elem).or_else(|| impl_trait(elem)) {
            return Err((at(span), BORROWED));
        }
        let owned: Type = match elem {
            Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
                syn::parse_quote_spanned!(elem.span()=> ::std::string::String)
            }
            Type::Slice(s) => {
                let inner = &s.elem;
                syn::parse_quote_spanned!(elem.span()=> ::std::vec::Vec<#inner>)
            }
            other => other.clone(),
        };
        return Ok((owned, true));
    }
    if let Some(span) = impl_trait(ty) {
        return Err((
            at(span),
            "`impl Trait` arguments make the function generic, which a stage cannot be; \
             name a concrete type",
        ));
    }
    if let Some(span) = borrowed(ty) {
        return Err((at(span), BORROWED));
    }
    Ok((ty.clone(), false))
}

fn output(ty: &Type) -> Result<Output, (TokenStream, String)> {
    let ty = ungroup(ty);
    if let Some(span) = impl_trait(ty) {
        return Err((
            at(span),
            "`impl Trait` cannot be named in the stage type; return a concrete type, such as \
             `Vec<T>` instead of `impl Iterator<Item = T>`"
                .to_owned(),
        ));
    }
    if let Some(span) = borrowed(ty) {
        return Err((
            at(span),
            "a stage output must be owned: it moves to the next stage after this call; \
             return `String` instead of `&str`, `Arc<T>` instead of `&T`"
                .to_owned(),
        ));
    }
    if let Some((name, args)) = last_segment(ty) {
        if name == "Result" {
            let [ok, err] = args.as_slice() else {
                let segment = match ty {
                    Type::Path(p) => p.path.segments.last().map(ToTokens::to_token_stream),
                    _ => None,
                };
                return Err((
                    segment.unwrap_or_else(|| ty.to_token_stream()),
                    format!(
                        "cannot see the error type of `{}`: `#[stage]` reads it from the \
                         return type; write `Result<T, E>` in full, such as \
                         `Result<T, std::io::Error>`",
                        type_text(ty)
                    ),
                ));
            };
            if let Some(message) = not_an_error(err) {
                return Err((err.to_token_stream(), message));
            }
            return Ok(Output {
                ty: (*ok).clone(),
                error: Some((*err).clone()),
                option: last_segment(ok).is_some_and(|(n, a)| n == "Option" && a.len() == 1),
            });
        }
        if name == "Option" && args.len() == 1 {
            return Ok(Output {
                ty: ty.clone(),
                error: None,
                option: true,
            });
        }
    }
    Ok(Output {
        ty: ty.clone(),
        error: None,
        option: false,
    })
}

/// Error types known not to implement `std::error::Error`, which `Stage::Error` needs.
fn not_an_error(err: &Type) -> Option<String> {
    let text = type_text(err);
    let boxed = match ungroup(err) {
        Type::Path(p) => {
            let names: Vec<String> = p
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect();
            match names
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                [.., "BoxError"] => true,
                ["String"] | ["std" | "alloc", "string", "String"] => {
                    return Some(
                        "`String` does not implement `std::error::Error`, which a stage's error \
                         type must; wrap the text in `pipeline_core::error::Message`, or return \
                         an enum deriving `thiserror::Error`"
                            .to_owned(),
                    );
                }
                ["anyhow", "Error"] => {
                    return Some(
                        "`anyhow::Error` does not implement `std::error::Error`, which a stage's \
                         error type must: the stage hands it to retries and dead letters; \
                         return a concrete error type, such as an enum deriving \
                         `thiserror::Error`"
                            .to_owned(),
                    );
                }
                [.., "Box"] => last_segment(err)
                    .is_some_and(|(_, args)| matches!(args.as_slice(), [Type::TraitObject(_)])),
                _ => false,
            }
        }
        _ => false,
    };
    boxed.then(|| {
        format!(
            "`{text}` does not implement `std::error::Error` (a boxed `dyn Error` does not), \
             which a stage's error type must; return a concrete error type, such as an enum \
             deriving `thiserror::Error`, or `pipeline_core::error::Message`"
        )
    })
}

/// A type as the user would write it (`std::io::Result<String>`).
fn type_text(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace("& ", "&")
}

/// A one-token stand-in carrying `span`, for spanning an error on it.
fn at(span: Span) -> TokenStream {
    quote_spanned!(span=> _)
}

/// The last path segment's name and its type arguments.
fn last_segment(ty: &Type) -> Option<(String, Vec<&Type>)> {
    let Type::Path(p) = ungroup(ty) else {
        return None;
    };
    if p.qself.is_some() {
        return None;
    }
    let segment = p.path.segments.last()?;
    let args = match &segment.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|arg| match arg {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((segment.ident.to_string(), args))
}

/// The span of a non-`'static` borrow inside `ty`, if any.
fn borrowed(ty: &Type) -> Option<Span> {
    match ty {
        Type::Reference(r) => match &r.lifetime {
            Some(lt) if lt.ident == "static" => borrowed(&r.elem),
            _ => Some(r.and_token.span),
        },
        Type::Path(p) => {
            if let Some(span) = p.qself.as_ref().and_then(|q| borrowed(&q.ty)) {
                return Some(span);
            }
            p.path
                .segments
                .iter()
                .find_map(|segment| match &segment.arguments {
                    PathArguments::AngleBracketed(a) => a.args.iter().find_map(|arg| match arg {
                        GenericArgument::Lifetime(lt) if lt.ident != "static" => Some(lt.span()),
                        GenericArgument::Type(t) => borrowed(t),
                        _ => None,
                    }),
                    PathArguments::Parenthesized(_) | PathArguments::None => None,
                })
        }
        Type::Array(a) => borrowed(&a.elem),
        Type::Slice(s) => borrowed(&s.elem),
        Type::Group(g) => borrowed(&g.elem),
        Type::Paren(p) => borrowed(&p.elem),
        Type::Tuple(t) => t.elems.iter().find_map(borrowed),
        Type::TraitObject(t) => t.bounds.iter().find_map(|bound| match bound {
            syn::TypeParamBound::Lifetime(lt) if lt.ident != "static" => Some(lt.span()),
            _ => None,
        }),
        // Function pointers are `'static` whatever their arguments borrow.
        _ => None,
    }
}

/// The span of an `impl Trait` inside `ty`, if any.
fn impl_trait(ty: &Type) -> Option<Span> {
    match ty {
        Type::ImplTrait(t) => Some(t.impl_token.span),
        Type::Reference(r) => impl_trait(&r.elem),
        Type::Path(p) => p
            .path
            .segments
            .iter()
            .find_map(|segment| match &segment.arguments {
                PathArguments::AngleBracketed(a) => a.args.iter().find_map(|arg| match arg {
                    GenericArgument::Type(t) => impl_trait(t),
                    _ => None,
                }),
                _ => None,
            }),
        Type::Array(a) => impl_trait(&a.elem),
        Type::Slice(s) => impl_trait(&s.elem),
        Type::Group(g) => impl_trait(&g.elem),
        Type::Paren(p) => impl_trait(&p.elem),
        Type::Tuple(t) => t.elems.iter().find_map(impl_trait),
        _ => None,
    }
}

//! What a type says: whether it borrows, hides an `impl Trait`, is the `Context`, a
//! `Result` or an `Option`. Pure functions over `syn` types, shared by the steps of
//! `check`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, Type};

use super::Output;

pub(super) fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        other => other,
    }
}

/// `&Context` (any path ending in `Context`, any lifetime).
pub(super) fn is_context(ty: &Type) -> bool {
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
pub(super) fn input_type(ty: &Type) -> Result<(Type, bool), (TokenStream, &'static str)> {
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

pub(super) fn output(ty: &Type) -> Result<Output, (TokenStream, String)> {
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
pub(super) fn not_an_error(err: &Type) -> Option<String> {
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
pub(super) fn type_text(ty: &Type) -> String {
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
pub(super) fn at(span: Span) -> TokenStream {
    quote_spanned!(span=> _)
}

/// The last path segment's name and its type arguments.
pub(super) fn last_segment(ty: &Type) -> Option<(String, Vec<&Type>)> {
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
pub(super) fn borrowed(ty: &Type) -> Option<Span> {
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
pub(super) fn impl_trait(ty: &Type) -> Option<Span> {
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

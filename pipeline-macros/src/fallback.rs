//! Phase 5, when something is wrong: every error at once, the user's function unchanged
//! (so its body still type-checks and IDEs keep working), and the stage type so that code
//! naming it does not fail a second time.
//!
//! When only options are wrong, the rejected options were dropped and the full expansion
//! is still emitted. When the signature is wrong, a plain stub struct stands in for the
//! stage type. A method (`self`) gets no stub: it sits in an `impl` block, where a struct
//! cannot.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::quote;
use syn::{Ident, ItemFn, Visibility};

use crate::attr::Args;
use crate::expand::krate;

pub(crate) fn emit(
    func: &ItemFn,
    expansion: Option<TokenStream>,
    stub: Option<(Visibility, Ident)>,
    args: &Args,
    errors: syn::Error,
) -> TokenStream {
    let errors = errors.to_compile_error();
    if let Some(expansion) = expansion {
        return quote!(#errors #expansion);
    }
    let stub = stub.map(|(vis, ident)| {
        let krate = krate(args);
        let doc = format!(
            " Stand-in for the stage generated from `{}`, which has errors.",
            func.sig.ident
        );
        quote! {
            #[doc = #doc]
            #[derive(#krate::__private::Debug)]
            #vis struct #ident;
        }
    });
    quote!(#errors #func #stub)
}

/// `#[stage]` on something that is not a function: the item unchanged, and one error on
/// the item's keyword (`struct`, `impl`, ...), past its attributes and visibility.
pub(crate) fn not_a_function(input: TokenStream) -> TokenStream {
    let keyword = item_keyword(&input);
    let what = keyword.as_ref().map_or_else(
        || "this item".to_owned(),
        |ident| match ident.to_string().as_str() {
            "fn" => "a function without a body".to_owned(),
            other => format!("a `{other}`"),
        },
    );
    let error = syn::Error::new(
        keyword.map_or_else(Span::call_site, |ident| ident.span()),
        format!(
            "`#[stage]` goes on a function with a body, not on {what}; write a function such \
             as `async fn parse(line: &str) -> Result<Order, ParseError> {{ ... }}`"
        ),
    )
    .to_compile_error();
    quote!(#error #input)
}

/// Words that qualify an item rather than name its kind.
const QUALIFIERS: &[&str] = &["unsafe", "async", "const", "extern", "default", "safe"];

/// The first word of an item after its outer attributes (`#[...]`) and visibility
/// (`pub`, `pub(crate)`).
fn item_keyword(input: &TokenStream) -> Option<Ident> {
    let mut tokens = input.clone().into_iter().peekable();
    while let Some(token) = tokens.next() {
        match token {
            // `#` and the bracketed attribute after it.
            TokenTree::Punct(p) if p.as_char() == '#' => {
                tokens.next();
            }
            TokenTree::Ident(ident) if ident == "pub" => {
                if matches!(tokens.peek(), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis)
                {
                    tokens.next();
                }
            }
            // `unsafe impl`, `extern "C" fn`, `const fn`: the item's word comes later.
            TokenTree::Ident(ident)
                if QUALIFIERS.contains(&ident.to_string().as_str())
                    && tokens.peek().is_some_and(|next| match next {
                        TokenTree::Ident(next) => ["fn", "impl", "trait"]
                            .iter()
                            .chain(QUALIFIERS)
                            .any(|word| next == word),
                        TokenTree::Literal(_) => true,
                        _ => false,
                    }) => {}
            TokenTree::Literal(_) => {}
            TokenTree::Ident(ident) => return Some(ident),
            _ => return None,
        }
    }
    None
}

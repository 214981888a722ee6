//! Phase 5, when something is wrong: every error at once, the user's function unchanged
//! (so its body still type-checks and IDEs keep working), and the stage type so that code
//! naming it does not fail a second time.
//!
//! When only options are wrong, the rejected options were dropped and the full expansion
//! is still emitted. When the signature is wrong, a plain stub struct stands in for the
//! stage type. A method (`self`) gets no stub: it sits in an `impl` block, where a struct
//! cannot.

use proc_macro2::{Span, TokenStream};
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

/// `#[stage]` on something that is not a function: the item unchanged, and one error.
pub(crate) fn not_a_function(input: TokenStream) -> TokenStream {
    let error = syn::Error::new(
        Span::call_site(),
        "`#[stage]` goes on a function with a body, such as \
         `async fn parse(line: &str) -> Result<Order, ParseError> { ... }`",
    )
    .to_compile_error();
    quote!(#error #input)
}

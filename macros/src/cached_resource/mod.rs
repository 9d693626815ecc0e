//! `#[cached_resource]`: parse (`args`, `syn::ItemFn`) -> validate (`valid`) -> expand (`expand`).
//!
//! On any error the macro emits every error next to the user's function, unchanged, so the
//! rest of the crate (and the IDE) keeps working.

mod args;
mod expand;
mod valid;

use darling::Error;
use proc_macro2::TokenStream;
use quote::ToTokens;

pub(crate) fn expand_cached_resource(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Error::accumulator();
    let args = args::Args::parse(args, &mut errors);
    let func = match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(e) => {
            let e =
                Error::custom(format!("`#[cached_resource]` goes on an `async fn` (a free function): {e}"))
                    .with_span(&e.span());
            errors.push(e);
            return with_errors(item, errors);
        }
    };
    // Validate even when the arguments had errors, so every mistake shows in one compile.
    let plan = errors.handle(valid::validate(&func, args));
    match (errors.finish(), plan) {
        (Ok(()), Some(plan)) => expand::expand(&plan),
        (result, _) => {
            let mut func = func;
            valid::strip_not_key(&mut func);
            let mut out = func.into_token_stream();
            if let Err(e) = result {
                out.extend(e.write_errors());
            }
            out
        }
    }
}

/// The user's item, unchanged, followed by the errors.
fn with_errors(item: TokenStream, errors: darling::error::Accumulator) -> TokenStream {
    let mut out = item;
    if let Err(e) = errors.finish() {
        out.extend(e.write_errors());
    }
    out
}

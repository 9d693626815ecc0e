//! `#[derive(Connection)]`: parse (`ast`, with the fields' serde attributes from `serde_attrs`)
//! -> validate (`valid`) -> expand (`expand`).
//!
//! On any error the derive emits every error plus a minimal fallback impl, so that the rest of
//! the user's crate (and their IDE) does not drown in follow-on errors.

mod ast;
mod expand;
mod serde_attrs;
mod valid;

use darling::Error;
use proc_macro2::TokenStream;

pub(crate) fn expand_derive_connection(input: TokenStream) -> TokenStream {
    let input = match syn::parse2::<syn::DeriveInput>(input) {
        Ok(input) => input,
        Err(e) => return e.into_compile_error(),
    };
    let mut errors = Error::accumulator();
    let parsed = ast::Input::from_syn(&input, &mut errors);
    valid::validate(&parsed, &mut errors);
    match errors.finish() {
        Ok(()) => expand::expand(&parsed),
        Err(e) => {
            let mut out = e.write_errors();
            if parsed.fields.is_some() {
                out.extend(expand::fallback(&parsed));
            }
            out
        }
    }
}

//! Where generated code finds connscope: `::connscope::__private`, or `<path>::__private` when the
//! user wrote `crate = "path"` (for a renamed or re-exported facade). Generated code names
//! nothing else, so a user's `Result`, `Option` or `Box` can never capture it.

use darling::Result;
use proc_macro2::TokenStream;
use quote::quote;
use syn::Expr;

use crate::attr::keys::path;

/// The facade's hidden module, through which generated code names everything.
pub(crate) fn private(krate: Option<&syn::Path>) -> TokenStream {
    match krate {
        Some(p) => quote!(#p::__private),
        None => quote!(::connscope::__private),
    }
}

/// Parses the value of `crate = "..."`.
pub(crate) fn parse_crate(expr: &Expr) -> Result<syn::Path> {
    path(expr, "crate", "crate = \"::connscope\"")
}

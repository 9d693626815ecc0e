//! `scope = "global" | "session"`.

use darling::util::SpannedValue;
use darling::{Error, Result};
use quote::quote;
use syn::Expr;

use super::closest;
use super::keys::{lit_str, ungroup};

/// Where cached values live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// One cache shared by every user of the runtime.
    Global,
    /// One cache per user session.
    Session,
}

const NAMES: &[&str] = &["global", "session"];
/// Words people use for the two scopes.
const SYNONYMS: &[(&str, &str)] = &[
    ("shared", "global"),
    ("process", "global"),
    ("app", "global"),
    ("static", "global"),
    ("user", "session"),
    ("per_user", "session"),
    ("per_session", "session"),
    ("per-session", "session"),
    ("request", "session"),
];

impl Scope {
    /// Parses the value of `scope = ...`.
    pub(crate) fn parse(expr: &Expr) -> Result<SpannedValue<Scope>> {
        let Some(lit) = lit_str(expr) else {
            let expr = ungroup(expr);
            // `scope = session`: the intent is clear, only the quotes are missing.
            let word = match expr {
                Expr::Path(p) => p.path.get_ident().map(|i| i.to_string()),
                _ => None,
            };
            let suggestion = word.as_deref().and_then(|w| closest(w, NAMES, SYNONYMS));
            let msg = match suggestion {
                Some(s) => format!("`scope` must be a string: write `scope = \"{s}\"`"),
                None => "`scope` must be a string: `scope = \"global\"` (shared by every user) or \
                         `scope = \"session\"` (one per user session)"
                    .to_owned(),
            };
            return Err(Error::custom(msg).with_span(expr));
        };
        let value = lit.value();
        let scope = match value.as_str() {
            "global" => Scope::Global,
            "session" => Scope::Session,
            other => {
                let msg = match closest(other, NAMES, SYNONYMS) {
                    Some(s) => format!(
                        "unknown scope `\"{other}\"`: did you mean `\"{s}\"`? A scope is `\"global\"` \
                         (shared by every user) or `\"session\"` (one per user session)"
                    ),
                    None => format!(
                        "unknown scope `\"{other}\"`: a scope is `\"global\"` (shared by every user) or \
                         `\"session\"` (one per user session)"
                    ),
                };
                return Err(Error::custom(msg).with_span(lit));
            }
        };
        Ok(SpannedValue::new(scope, lit.span()))
    }

    /// The runtime's `Scope` variant.
    pub(crate) fn variant(self) -> proc_macro2::TokenStream {
        match self {
            Scope::Global => quote!(Global),
            Scope::Session => quote!(Session),
        }
    }
}

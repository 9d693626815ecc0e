//! `refresh = "background"`: serve a value past its ttl while one refresh runs.

use darling::util::SpannedValue;
use darling::{Error, Result};
use syn::Expr;

use super::closest;
use super::keys::{lit_str, ungroup};

/// How values past their ttl are refreshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// Served stale inside the window while one refresh per key runs in the background.
    Background,
}

const NAMES: &[&str] = &["background"];
/// Words people use for stale-while-revalidate.
const SYNONYMS: &[(&str, &str)] = &[
    ("bg", "background"),
    ("async", "background"),
    ("stale", "background"),
    ("swr", "background"),
    ("stale-while-revalidate", "background"),
    ("stale_while_revalidate", "background"),
    ("lazy", "background"),
];

const WHAT: &str = "`refresh = \"background\"` serves a value past its ttl (for `max_stale` more, one ttl by \
                    default) while one refresh per key runs; leave `refresh` out to load expired values in the \
                    foreground";

impl Refresh {
    /// Parses the value of `refresh = ...`.
    pub(crate) fn parse(expr: &Expr) -> Result<SpannedValue<Refresh>> {
        let Some(lit) = lit_str(expr) else {
            let expr = ungroup(expr);
            let msg = match expr {
                Expr::Path(p) if p.path.get_ident().is_some_and(|i| i == "background") => {
                    "`refresh` must be a string: write `refresh = \"background\"`".to_owned()
                }
                _ => format!("`refresh` must be a string: {WHAT}"),
            };
            return Err(Error::custom(msg).with_span(expr));
        };
        match lit.value().as_str() {
            "background" => Ok(SpannedValue::new(Refresh::Background, lit.span())),
            other => {
                let msg = match closest(other, NAMES, SYNONYMS) {
                    Some(s) => format!("unknown refresh mode `\"{other}\"`: did you mean `\"{s}\"`? {WHAT}"),
                    None => format!("unknown refresh mode `\"{other}\"`: {WHAT}"),
                };
                Err(Error::custom(msg).with_span(lit))
            }
        }
    }
}

//! Durations written as strings (`ttl = "30m"`, `health_check = "5s"`), parsed at compile time
//! with humantime so that a bad one is a compile error pointing at the literal.

use std::time::Duration;

use darling::util::SpannedValue;
use darling::{Error, Result};
use proc_macro2::TokenStream;
use quote::quote;
use syn::{Expr, Lit};

use super::keys::{lit_str, ungroup};

/// Parses a non-zero duration given as the value of `key` (`ttl`, or an interval).
/// `zero_hint` says what to do instead of a zero duration.
pub(crate) fn parse(expr: &Expr, key: &str, zero_hint: &str) -> Result<SpannedValue<Duration>> {
    let Some(lit) = lit_str(expr) else {
        let expr = ungroup(expr);
        let msg = match expr {
            Expr::Lit(l) if matches!(l.lit, Lit::Int(_) | Lit::Float(_)) => {
                let n = quote!(#l).to_string();
                format!("`{key}` needs a unit: write `{key} = \"{n}s\"` (or \"{n}m\", \"{n}h\")")
            }
            _ => format!("`{key}` must be a duration string, like `{key} = \"30m\"` or `{key} = \"1h 30m\""),
        };
        return Err(Error::custom(msg).with_span(expr));
    };
    let text = lit.value();
    if text.trim_start().starts_with('-') {
        return Err(Error::custom(format!(
            "`{key}` cannot be negative: write a duration like \"90s\", \"30m\" or \"1h 30m\""
        ))
        .with_span(lit));
    }
    let duration = humantime::parse_duration(text.trim()).map_err(|e| {
        Error::custom(format!(
            "`{key} = \"{text}\"` is not a duration ({e}); write a duration like \"90s\", \"30m\" or \"1h 30m\""
        ))
        .with_span(lit)
    })?;
    if duration.is_zero() {
        return Err(Error::custom(format!("`{key}` must be longer than zero: {zero_hint}")).with_span(lit));
    }
    Ok(SpannedValue::new(duration, lit.span()))
}

/// A `core::time::Duration` constant expression under `private` (the facade's `__private`).
pub(crate) fn tokens(d: Duration, private: &TokenStream) -> TokenStream {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    quote!(#private::core::time::Duration::new(#secs, #nanos))
}

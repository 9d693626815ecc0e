//! `max_entries = N`, a positive integer.

use darling::util::SpannedValue;
use darling::{Error, Result};
use syn::{Expr, Lit, UnOp};

use super::keys::ungroup;

/// Parses the value of `max_entries = ...`.
pub(crate) fn parse(expr: &Expr) -> Result<SpannedValue<u64>> {
    let expr = ungroup(expr);
    match expr {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => {
                let n: u64 = i.base10_parse().map_err(|_| {
                    Error::custom("`max_entries` is too large: it must fit in a `u64`").with_span(i)
                })?;
                if n == 0 {
                    return Err(Error::custom(
                        "`max_entries = 0` would cache nothing: use at least 1, or leave `max_entries` out \
                         for no bound",
                    )
                    .with_span(i));
                }
                Ok(SpannedValue::new(n, i.span()))
            }
            Lit::Str(s) if s.value().trim().parse::<u64>().is_ok() => Err(Error::custom(format!(
                "`max_entries` must be a number, not a string: write `max_entries = {}`",
                s.value().trim()
            ))
            .with_span(s)),
            _ => Err(not_a_number(expr)),
        },
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => {
            Err(Error::custom("`max_entries` must be at least 1 (or leave it out for no bound)")
                .with_span(expr))
        }
        _ => Err(not_a_number(expr)),
    }
}

fn not_a_number(expr: &Expr) -> Error {
    Error::custom("`max_entries` must be a whole number of entries, like `max_entries = 100`").with_span(expr)
}

//! Checks that span several attributes of one `#[derive(Connection)]` input. Single-value
//! checks (a bad ttl, an unknown key) happen while parsing, in `ast.rs`.

use darling::Error;
use darling::error::Accumulator;
use proc_macro2::Span;

use super::ast::{Field, Input};

pub(crate) fn validate(input: &Input<'_>, errors: &mut Accumulator) {
    for field in input.fields.iter().flatten() {
        if let Some(span) = field.serde.flatten {
            errors.push(
                Error::custom(format!(
                    "`#[derive(Connection)]` cannot read a `#[serde(flatten)]` field (`{}`) from a login form or \
                     a fixed value one setting at a time: list its settings as fields of this struct",
                    field.ident
                ))
                .with_span(&span),
            );
        }
        if field.skip.is_some() || field.serde.skip {
            skipped(field, errors);
        } else if field.fixed.is_some() {
            fixed(field, errors);
        }
    }
}

/// A skipped field is runtime state: every setting attribute on it would be ignored.
fn skipped(field: &Field<'_>, errors: &mut Accumulator) {
    let why = match field.skip {
        Some(_) => "`#[connection(skip)]`",
        None => "`#[serde(skip)]`",
    };
    let label = field.label.as_ref().map(|l| ("label", l.span()));
    let ignored = [
        ("secret", field.secret),
        ("fixed", field.fixed),
        ("default", field.default.as_ref().map(|d| d.span)),
    ];
    for (key, span) in ignored.into_iter().filter_map(|(k, s)| s.map(|s| (k, s))).chain(label) {
        errors.push(
            Error::custom(format!(
                "`{key}` has no effect on `{}`: a {why} field is runtime state, not a setting (never read \
                 from config or the login form, always `Default::default()`); remove `{key}`",
                field.ident
            ))
            .with_span(&span),
        );
    }
}

/// A fixed field is not in the login form, so form-only settings on it would be ignored: say so
/// rather than silently dropping them.
fn fixed(field: &Field<'_>, errors: &mut Accumulator) {
    let mut push = |key: &str, span: Span, extra: &str| {
        errors.push(
            Error::custom(format!(
                "`{key}` has no effect on `{}`: a `fixed` field is not in the login form{extra}; remove `{key}` \
                 (or `fixed`)",
                field.ident
            ))
            .with_span(&span),
        );
    };
    if let Some(span) = field.secret {
        push("secret", span, ". A field of type `Secret` is never printed anyway");
    }
    if let Some(label) = &field.label {
        push("label", label.span(), "");
    }
}

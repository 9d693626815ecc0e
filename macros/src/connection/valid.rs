//! Checks that span several attributes of one `#[derive(Connection)]` input. Single-value
//! checks (a bad ttl, an unknown key) happen while parsing, in `ast.rs`.

use darling::Error;
use darling::error::Accumulator;

use super::ast::Input;

pub(crate) fn validate(input: &Input<'_>, errors: &mut Accumulator) {
    for field in input.fields.iter().flatten() {
        // A fixed field is not in the login form, so form-only settings on it would be ignored:
        // say so rather than silently dropping them.
        let Some(_) = field.fixed else { continue };
        if let Some(span) = field.secret {
            errors.push(
                Error::custom(format!(
                    "`secret` has no effect on `{}`: a `fixed` field is not in the login form. A field of \
                     type `Secret` is never printed anyway; remove `secret` (or `fixed`)",
                    field.ident
                ))
                .with_span(&span),
            );
        }
        if let Some(label) = &field.label {
            errors.push(
                Error::custom(format!(
                    "`label` has no effect on `{}`: a `fixed` field is not in the login form; remove `label` \
                     (or `fixed`)",
                    field.ident
                ))
                .with_span(label),
            );
        }
    }
}

//! Parses `#[derive(Connection)]` input: the struct's shape, `#[connection(...)]` on the struct
//! and on each field. Everything that can be wrong is recorded in the accumulator; what parsed
//! is kept (with spans) so later steps can check combinations and report them too.

use std::time::Duration;

use darling::ast::NestedMeta;
use darling::error::Accumulator;
use darling::util::SpannedValue;
use darling::{Error, Result};
use proc_macro2::Span;
use syn::{Data, DeriveInput, Expr, Fields, Generics, Ident, Lit, LitStr, Meta, Type, UnOp};

use super::serde_attrs::{SerdeContainer, SerdeField};
use crate::attr::keys::{self, Entry, Keys};
use crate::attr::scope::Scope;
use crate::attr::{closest, max_entries, ttl};
use crate::paths;

/// The name of the helper attribute.
pub(crate) const ATTR: &str = "connection";

const CONTAINER_KEYS: &[&str] = &["scope", "ttl", "max_entries", "name", "health_check", "refresh", "crate"];
const CONTAINER_SYNONYMS: &[(&str, &str)] = &[
    ("expiry", "ttl"),
    ("expire", "ttl"),
    ("timeout", "ttl"),
    ("capacity", "max_entries"),
    ("max_size", "max_entries"),
    ("size", "max_entries"),
    ("health", "health_check"),
    ("rebuild", "refresh"),
    ("rotate", "refresh"),
    ("refresh_every", "refresh"),
    ("lifetime", "refresh"),
    ("credentials_lifetime", "refresh"),
    ("krate", "crate"),
];
const FIELD_KEYS: &[&str] = &["secret", "default", "label", "fixed", "skip"];
const FIELD_SYNONYMS: &[(&str, &str)] = &[
    ("password", "secret"),
    ("sensitive", "secret"),
    ("skip_form", "fixed"),
    ("config", "fixed"),
    ("state", "skip"),
    ("ignore", "skip"),
    ("runtime", "skip"),
    ("hidden", "fixed"),
    ("hide", "fixed"),
    ("title", "label"),
];

/// A parsed `#[derive(Connection)]` input.
pub(crate) struct Input<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) generics: &'a Generics,
    pub(crate) args: ContainerArgs,
    /// The named fields; `None` when the input is not a struct with named fields.
    pub(crate) fields: Option<Vec<Field<'a>>>,
}

/// `default = <literal>` of a field.
pub(crate) struct Default {
    pub(crate) text: String,
    pub(crate) toml: String,
    pub(crate) span: Span,
}

/// `#[connection(...)]` on the struct.
#[derive(Default)]
pub(crate) struct ContainerArgs {
    pub(crate) scope: Option<SpannedValue<Scope>>,
    pub(crate) ttl: Option<SpannedValue<Duration>>,
    pub(crate) max_entries: Option<SpannedValue<u64>>,
    pub(crate) name: Option<LitStr>,
    pub(crate) health_check: Option<HealthCheck>,
    /// `refresh = "14m"`: every live client is rebuilt this long after it connected.
    pub(crate) refresh: Option<SpannedValue<Duration>>,
    pub(crate) krate: Option<syn::Path>,
}

/// `health_check = "every_use" | "on_error" | "<interval>"`.
#[derive(Clone, Copy)]
pub(crate) enum HealthCheck {
    EveryUse,
    OnError,
    Interval(Duration),
}

/// One named field and its `#[connection(...)]` attributes.
pub(crate) struct Field<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    /// `#[connection(secret)]`.
    pub(crate) secret: Option<Span>,
    /// The type is spelled `Secret` or `Option<Secret>`: a secret without the attribute.
    pub(crate) secret_type: bool,
    pub(crate) fixed: Option<Span>,
    /// `#[connection(skip)]`: runtime state, not a setting; filled with `Default::default()`.
    pub(crate) skip: Option<Span>,
    /// The field's `#[serde(...)]`: a setting is read the way serde reads it.
    pub(crate) serde: SerdeField,
    pub(crate) label: Option<LitStr>,
    /// The default: the text a form would hold, and the same as a TOML literal (how a
    /// fixed field reads it).
    pub(crate) default: Option<Default>,
}

impl<'a> Input<'a> {
    pub(crate) fn from_syn(input: &'a DeriveInput, errors: &mut Accumulator) -> Self {
        let mut keys = Keys::new("#[connection]", CONTAINER_KEYS, CONTAINER_SYNONYMS)
            .misplaced(FIELD_KEYS, "on a field, not on the struct");
        let mut args = ContainerArgs::default();
        for items in attr_lists(&input.attrs, errors) {
            for entry in keys.entries(&items, errors) {
                errors.handle(args.set(&entry));
            }
        }
        let serde = SerdeContainer::from_attrs(&input.attrs);
        let fields = match &input.data {
            Data::Struct(s) => match &s.fields {
                Fields::Named(named) => Some(
                    named
                        .named
                        .iter()
                        .filter_map(|f| Field::from_syn(f, errors))
                        .map(|mut f| {
                            serde.apply(f.ident, &mut f.serde);
                            f
                        })
                        .collect(),
                ),
                Fields::Unnamed(unnamed) => {
                    errors.push(
                        Error::custom(format!(
                            "`#[derive(Connection)]` needs named fields, and `{}` is a tuple struct: \
                             name each setting (`struct {} {{ url: String }}`); the names are the \
                             `[connections.<name>]` keys and the login-form fields",
                            input.ident, input.ident
                        ))
                        .with_span(&unnamed.paren_token.span.join()),
                    );
                    None
                }
                Fields::Unit => {
                    errors.push(
                        Error::custom(format!(
                            "`#[derive(Connection)]` needs a struct with named fields, and `{0}` is a unit \
                             struct: write `struct {0} {{}}` for a provider without settings",
                            input.ident
                        ))
                        .with_span(&input.ident),
                    );
                    None
                }
            },
            Data::Enum(e) => {
                errors.push(
                    Error::custom(format!(
                        "`#[derive(Connection)]` needs a struct with named fields (the provider's settings), \
                         and `{}` is an enum: make it a struct, and keep a choice as a field if you need one",
                        input.ident
                    ))
                    .with_span(&e.enum_token),
                );
                None
            }
            Data::Union(u) => {
                errors.push(
                    Error::custom(format!(
                        "`#[derive(Connection)]` needs a struct with named fields (the provider's settings), \
                         and `{}` is a union: make it a struct",
                        input.ident
                    ))
                    .with_span(&u.union_token),
                );
                None
            }
        };
        Input { ident: &input.ident, generics: &input.generics, args, fields }
    }
}

impl ContainerArgs {
    fn set(&mut self, entry: &Entry<'_>) -> Result<()> {
        match entry.key.as_str() {
            "scope" => {
                self.scope = Some(Scope::parse(keys::value(entry, "scope = \"session\"")?)?);
            }
            "ttl" => {
                let value = keys::value(entry, "ttl = \"30m\"")?;
                self.ttl = Some(ttl::parse(
                    value,
                    "ttl",
                    "to keep connections until they are evicted or their session ends, leave `ttl` out",
                )?);
            }
            "max_entries" => {
                self.max_entries = Some(max_entries::parse(keys::value(entry, "max_entries = 10")?)?);
            }
            "name" => {
                let value = keys::value(entry, "name = \"warehouse\"")?;
                let lit = keys::lit_str(value).ok_or_else(|| {
                    Error::custom("`name` must be a string, like `name = \"warehouse\"`").with_span(value)
                })?;
                check_name(lit)?;
                self.name = Some(lit.clone());
            }
            "health_check" => {
                self.health_check =
                    Some(parse_health_check(keys::value(entry, "health_check = \"every_use\"")?)?);
            }
            "refresh" => {
                let value = keys::value(entry, "refresh = \"14m\"")?;
                if let Some(lit) = keys::lit_str(value)
                    && lit.value().trim() == "background"
                {
                    return Err(Error::custom(
                        "`refresh` on `#[connection]` is how long a live client is used before it is rebuilt, a \
                         duration like `refresh = \"14m\"`; `refresh = \"background\"` belongs on a \
                         `#[cached_resource]` function",
                    )
                    .with_span(lit));
                }
                self.refresh = Some(ttl::parse(
                    value,
                    "refresh",
                    "it is how long a live client is used before it is rebuilt; to never rebuild, leave \
                     `refresh` out",
                )?);
            }
            "crate" => {
                self.krate = Some(paths::parse_crate(keys::value(entry, "crate = \"::connscope\"")?)?);
            }
            _ => {}
        }
        Ok(())
    }
}

/// A connection name is a `[connections.<name>]` key and part of `CONNSCOPE__<NAME>__<FIELD>`.
fn check_name(lit: &LitStr) -> Result<()> {
    let name = lit.value();
    if name.is_empty() {
        return Err(Error::custom(
            "`name` cannot be empty: it is the `[connections.<name>]` section of this provider",
        )
        .with_span(lit));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(Error::custom(format!(
            "`name` may only hold letters, digits, `_` and `-` (it is a `[connections.<name>]` key and part \
             of environment variable names), found `{bad}`"
        ))
        .with_span(lit));
    }
    Ok(())
}

const HEALTH_WORDS: &[&str] = &["every_use", "on_error"];

fn parse_health_check(expr: &Expr) -> Result<HealthCheck> {
    let what = "`health_check` is `\"every_use\"`, `\"on_error\"` or an interval like `\"5s\"`";
    let Some(lit) = keys::lit_str(expr) else {
        return Err(Error::custom(format!("{what}; write it as a string")).with_span(keys::ungroup(expr)));
    };
    let text = lit.value();
    match text.as_str() {
        "every_use" => return Ok(HealthCheck::EveryUse),
        "on_error" => return Ok(HealthCheck::OnError),
        _ => {}
    }
    if text.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
        let every = ttl::parse(expr, "health_check", "use `\"every_use\"` to check before every use")?;
        return Ok(HealthCheck::Interval(*every));
    }
    let msg = match closest(&text, HEALTH_WORDS, &[("always", "every_use"), ("never", "on_error")]) {
        Some(s) => format!("unknown `health_check` `\"{text}\"`: did you mean `\"{s}\"`? {what}"),
        None => format!("unknown `health_check` `\"{text}\"`: {what}"),
    };
    Err(Error::custom(msg).with_span(lit))
}

/// Where a field's value comes from.
pub(crate) enum Source {
    /// The login form (parsed from the submitted text).
    Form,
    /// The app's configuration (`#[connection(fixed)]`), deserialized.
    Fixed,
    /// Nowhere: runtime state (`#[connection(skip)]` or `#[serde(skip)]`), `Default::default()`.
    Skipped,
}

impl<'a> Field<'a> {
    pub(crate) fn source(&self) -> Source {
        if self.skip.is_some() || self.serde.skip {
            Source::Skipped
        } else if self.fixed.is_some() {
            Source::Fixed
        } else {
            Source::Form
        }
    }

    /// The field's name as written in config and forms: serde's `rename`, else the identifier
    /// (`r#type` is `type`).
    pub(crate) fn name(&self) -> String {
        if let Some(name) = &self.serde.rename {
            return name.clone();
        }
        let s = self.ident.to_string();
        s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
    }

    /// Whether the field is wiped after a login.
    pub(crate) fn is_secret(&self) -> bool {
        (self.secret.is_some() || self.secret_type) && !matches!(self.source(), Source::Skipped)
    }

    fn from_syn(field: &'a syn::Field, errors: &mut Accumulator) -> Option<Self> {
        let ident = field.ident.as_ref()?;
        let secret_type = is_secret_type(&field.ty);
        let mut out = Field {
            ident,
            ty: &field.ty,
            secret: None,
            secret_type,
            fixed: None,
            skip: None,
            serde: SerdeField::from_attrs(&field.attrs),
            label: None,
            default: None,
        };
        let mut keys = Keys::new("#[connection]", FIELD_KEYS, FIELD_SYNONYMS)
            .placed(" on a field")
            .misplaced(CONTAINER_KEYS, "on the struct, not on a field");
        for items in attr_lists(&field.attrs, errors) {
            for entry in keys.entries(&items, errors) {
                errors.handle(out.set(&entry));
            }
        }
        Some(out)
    }

    fn set(&mut self, entry: &Entry<'_>) -> Result<()> {
        let span = syn::spanned::Spanned::span(entry.meta.path());
        match entry.key.as_str() {
            "secret" => self.secret = keys::flag(entry, ATTR)?.then_some(span),
            "fixed" => self.fixed = keys::flag(entry, ATTR)?.then_some(span),
            "skip" => self.skip = keys::flag(entry, ATTR)?.then_some(span),
            "label" => {
                let value = keys::value(entry, "label = \"Password\"")?;
                let lit = keys::lit_str(value).ok_or_else(|| {
                    Error::custom("`label` must be a string, like `label = \"Database host\"`")
                        .with_span(value)
                })?;
                self.label = Some(lit.clone());
            }
            "default" => {
                let value = keys::value(entry, "default = \"5432\"")?;
                self.default = Some(default_text(value)?);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The text of `default = <literal>` (as a form would submit it) and its TOML literal.
fn default_text(expr: &Expr) -> Result<Default> {
    let expr = keys::ungroup(expr);
    let span = syn::spanned::Spanned::span(expr);
    let number = |digits: &str| Default { text: digits.to_owned(), toml: digits.to_owned(), span };
    let text = match expr {
        Expr::Lit(l) => match &l.lit {
            Lit::Str(s) => Some(Default { text: s.value(), toml: toml_string(&s.value()), span }),
            Lit::Int(i) => Some(number(i.base10_digits())),
            Lit::Float(f) => Some(number(f.base10_digits())),
            Lit::Bool(b) => Some(number(&b.value.to_string())),
            Lit::Char(c) => {
                Some(Default { text: c.value().to_string(), toml: toml_string(&c.value().to_string()), span })
            }
            _ => None,
        },
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => match keys::ungroup(&u.expr) {
            Expr::Lit(l) => match &l.lit {
                Lit::Int(i) => Some(number(&format!("-{}", i.base10_digits()))),
                Lit::Float(f) => Some(number(&format!("-{}", f.base10_digits()))),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    match text {
        Some(t) => Ok(t),
        None => Err(Error::custom(
            "`default` must be a literal (it is shown in the login form): a string, number, bool or char, \
             like `default = \"localhost\"` or `default = 5432`",
        )
        .with_span(expr)),
    }
}

/// Whether a type is spelled `Secret` / `connscope::Secret`, or `Option` of one. Seen through
/// the invisible group a `macro_rules!` `$ty:ty` fragment arrives in, and parentheses.
fn is_secret_type(ty: &Type) -> bool {
    let ty = match ty {
        Type::Group(g) => return is_secret_type(&g.elem),
        Type::Paren(p) => return is_secret_type(&p.elem),
        ty => ty,
    };
    let Type::Path(p) = ty else { return false };
    let Some(last) = p.path.segments.last() else { return false };
    if last.ident == "Secret" {
        return true;
    }
    if last.ident == "Option"
        && let syn::PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(syn::GenericArgument::Type(inner)) = args.args.first()
    {
        return is_secret_type(inner);
    }
    false
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The item lists of every `#[connection(...)]` among `attrs`.
fn attr_lists(attrs: &[syn::Attribute], errors: &mut Accumulator) -> Vec<Vec<NestedMeta>> {
    let mut out = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident(ATTR)) {
        match &attr.meta {
            Meta::List(list) => {
                if let Some(items) =
                    errors.handle(NestedMeta::parse_meta_list(list.tokens.clone()).map_err(Error::from))
                {
                    out.push(items);
                }
            }
            other => errors.push(
                Error::custom(
                    "write `#[connection(key = value, ...)]`, e.g. `#[connection(scope = \"session\")]`",
                )
                .with_span(other),
            ),
        }
    }
    out
}

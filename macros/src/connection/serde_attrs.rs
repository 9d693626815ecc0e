//! Reads the `#[serde(...)]` attributes of a field that change how its value is read, so that a
//! login form and a fixed value read a field exactly as the configuration loader (serde) does:
//! `rename`, `default`, `with` / `deserialize_with`, and `skip` / `skip_deserializing` on a
//! field; `rename_all` and `default` on the struct (applied to each field, as serde does).
//!
//! serde owns these attributes and reports their mistakes itself, so anything this module does
//! not understand is ignored, never reported twice.

use darling::ast::NestedMeta;
use syn::{Expr, Meta};

use crate::attr::keys::{lit_str, ungroup};

/// What serde's attributes say about one field.
#[derive(Default)]
pub(crate) struct SerdeField {
    /// `rename = "name"` or `rename(deserialize = "name")`: the name in config and forms.
    pub(crate) rename: Option<String>,
    /// `default` or `default = "path"`: the value when nothing is given.
    pub(crate) default: Option<SerdeDefault>,
    /// `with = "module"` (its `deserialize`) or `deserialize_with = "path"`.
    pub(crate) deserialize_with: Option<syn::Path>,
    /// `skip` or `skip_deserializing`: serde fills it with `Default::default()`.
    pub(crate) skip: bool,
    /// `flatten`: the field's own fields are settings of this struct (not supported here).
    pub(crate) flatten: Option<proc_macro2::Span>,
}

/// What serde's attributes on the struct say about every field.
#[derive(Default)]
pub(crate) struct SerdeContainer {
    /// `rename_all = "camelCase"` (or its `deserialize = ...` form).
    rename_all: Option<String>,
    /// `default` or `default = "path"`: a missing field comes from the struct's default.
    default: Option<SerdeDefault>,
}

/// serde's `default` on a field.
pub(crate) enum SerdeDefault {
    /// `default`: `Default::default()`.
    Trait,
    /// `default = "path"`: `path()`.
    Path(syn::Path),
    /// The struct's `default` (`Some(path)`: `default = "path"`): that field of the default
    /// struct.
    Container(Option<syn::Path>),
}

impl SerdeContainer {
    pub(crate) fn from_attrs(attrs: &[syn::Attribute]) -> Self {
        let mut out = SerdeContainer::default();
        for meta in serde_metas(attrs) {
            let Some(key) = meta.path().get_ident().map(ToString::to_string) else { continue };
            match (key.as_str(), &meta) {
                ("default", Meta::Path(_)) => out.default = Some(SerdeDefault::Trait),
                ("default", Meta::NameValue(nv)) => {
                    out.default = path_in(&nv.value).map(SerdeDefault::Path).or(out.default.take());
                }
                ("rename_all", _) => out.rename_all = directional(&meta).or(out.rename_all.take()),
                _ => {}
            }
        }
        out
    }

    /// Applies the struct's attributes to a field, unless the field says otherwise.
    pub(crate) fn apply(&self, ident: &syn::Ident, field: &mut SerdeField) {
        if field.rename.is_none()
            && let Some(rule) = &self.rename_all
        {
            let name = ident.to_string();
            field.rename = rename(name.strip_prefix("r#").unwrap_or(&name), rule);
        }
        if field.default.is_none() {
            field.default = match &self.default {
                Some(SerdeDefault::Trait) => Some(SerdeDefault::Container(None)),
                Some(SerdeDefault::Path(p)) => Some(SerdeDefault::Container(Some(p.clone()))),
                _ => None,
            };
        }
    }
}

/// Every `key ...` item of every `#[serde(...)]` among `attrs` (malformed ones are serde's to
/// report).
fn serde_metas(attrs: &[syn::Attribute]) -> Vec<Meta> {
    let mut out = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let Meta::List(list) = &attr.meta else { continue };
        let Ok(items) = NestedMeta::parse_meta_list(list.tokens.clone()) else { continue };
        out.extend(items.into_iter().filter_map(|item| match item {
            NestedMeta::Meta(meta) => Some(meta),
            _ => None,
        }));
    }
    out
}

/// The value of `key = "x"` or `key(deserialize = "x")`.
fn directional(meta: &Meta) -> Option<String> {
    match meta {
        Meta::NameValue(nv) => lit_str(ungroup(&nv.value)).map(|s| s.value()),
        Meta::List(list) => {
            let items = NestedMeta::parse_meta_list(list.tokens.clone()).ok()?;
            items.iter().find_map(|item| match item {
                NestedMeta::Meta(Meta::NameValue(nv)) if nv.path.is_ident("deserialize") => {
                    lit_str(ungroup(&nv.value)).map(|s| s.value())
                }
                _ => None,
            })
        }
        Meta::Path(_) => None,
    }
}

/// A snake_case field name under serde's `rename_all` rule (`None` for an unknown rule, which
/// serde reports).
fn rename(field: &str, rule: &str) -> Option<String> {
    let words = field.split('_').filter(|w| !w.is_empty());
    let capitalized = |w: &str| {
        let mut c = w.chars();
        c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
    };
    Some(match rule {
        "lowercase" | "snake_case" => field.to_owned(),
        "UPPERCASE" | "SCREAMING_SNAKE_CASE" => field.to_uppercase(),
        "kebab-case" => field.replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => field.replace('_', "-").to_uppercase(),
        "PascalCase" => words.map(capitalized).collect(),
        "camelCase" => {
            let pascal: String = words.map(capitalized).collect();
            let mut c = pascal.chars();
            c.next().map(|f| f.to_lowercase().chain(c).collect()).unwrap_or_default()
        }
        _ => return None,
    })
}

impl SerdeField {
    pub(crate) fn from_attrs(attrs: &[syn::Attribute]) -> Self {
        let mut out = SerdeField::default();
        for meta in serde_metas(attrs) {
            out.read(&meta);
        }
        out
    }

    fn read(&mut self, meta: &Meta) {
        let Some(key) = meta.path().get_ident().map(ToString::to_string) else { return };
        match (key.as_str(), meta) {
            ("skip" | "skip_deserializing", Meta::Path(_)) => self.skip = true,
            ("flatten", Meta::Path(p)) => self.flatten = Some(syn::spanned::Spanned::span(p)),
            ("default", Meta::Path(_)) => self.default = Some(SerdeDefault::Trait),
            ("default", Meta::NameValue(nv)) => {
                self.default = path_in(&nv.value).map(SerdeDefault::Path).or(self.default.take());
            }
            ("rename", _) => self.rename = directional(meta).or(self.rename.take()),
            ("with", Meta::NameValue(nv)) => {
                if let Some(mut module) = path_in(&nv.value) {
                    let span = module.segments.last().map(|s| s.ident.span());
                    let ident =
                        syn::Ident::new("deserialize", span.unwrap_or_else(proc_macro2::Span::call_site));
                    module.segments.push(ident.into());
                    self.deserialize_with = Some(module);
                }
            }
            ("deserialize_with", Meta::NameValue(nv)) => {
                self.deserialize_with = path_in(&nv.value).or(self.deserialize_with.take());
            }
            _ => {}
        }
    }
}

/// The path in a string literal like `"defaults::port"`, spanned at the literal.
fn path_in(expr: &Expr) -> Option<syn::Path> {
    lit_str(ungroup(expr))?.parse::<syn::Path>().ok()
}

#[cfg(test)]
mod tests {
    use super::{SerdeDefault, SerdeField};
    use quote::ToTokens;

    fn read(field: syn::Field) -> SerdeField {
        SerdeField::from_attrs(&field.attrs)
    }

    fn named(tokens: proc_macro2::TokenStream) -> syn::Field {
        syn::parse::Parser::parse2(syn::Field::parse_named, tokens).unwrap()
    }

    #[test]
    fn reads_what_changes_how_a_field_is_read() {
        let f = read(named(quote::quote! {
            #[serde(rename = "port_number", default = "defaults::port")]
            #[serde(with = "humantime_serde", deny_unknown_fields)]
            port: u16
        }));
        assert_eq!(f.rename.as_deref(), Some("port_number"));
        let Some(SerdeDefault::Path(p)) = f.default else { panic!("default path") };
        assert_eq!(p.to_token_stream().to_string(), "defaults :: port");
        let with = f.deserialize_with.unwrap().to_token_stream().to_string();
        assert_eq!(with, "humantime_serde :: deserialize");
        assert!(!f.skip);
    }

    #[test]
    fn skip_default_and_directional_rename() {
        let f = read(named(quote::quote! {
            #[serde(skip_deserializing, default, rename(serialize = "a", deserialize = "b"))]
            state: u8
        }));
        assert!(f.skip);
        assert!(matches!(f.default, Some(SerdeDefault::Trait)));
        assert_eq!(f.rename.as_deref(), Some("b"));
    }

    #[test]
    fn struct_attributes_apply_to_fields_that_do_not_override_them() {
        let item: syn::DeriveInput = syn::parse_quote! {
            #[serde(rename_all = "camelCase", default)]
            struct S { pool_size: u8, #[serde(rename = "x", default = "f")] other: u8, r#type: u8 }
        };
        let container = super::SerdeContainer::from_attrs(&item.attrs);
        let syn::Data::Struct(data) = &item.data else { unreachable!() };
        let mut fields = data.fields.iter().map(|f| {
            let mut serde = SerdeField::from_attrs(&f.attrs);
            container.apply(f.ident.as_ref().unwrap(), &mut serde);
            serde
        });
        let first = fields.next().unwrap();
        assert_eq!(first.rename.as_deref(), Some("poolSize"));
        assert!(matches!(first.default, Some(SerdeDefault::Container(None))));
        let second = fields.next().unwrap();
        assert_eq!(second.rename.as_deref(), Some("x"));
        assert!(matches!(second.default, Some(SerdeDefault::Path(_))));
        assert_eq!(fields.next().unwrap().rename.as_deref(), Some("type"));
    }

    #[test]
    fn rename_rules() {
        let all = ["lowercase", "UPPERCASE", "PascalCase", "camelCase", "snake_case"];
        let got: Vec<_> = all.iter().map(|r| super::rename("max_pool_size", r).unwrap()).collect();
        assert_eq!(got, ["max_pool_size", "MAX_POOL_SIZE", "MaxPoolSize", "maxPoolSize", "max_pool_size"]);
        assert_eq!(super::rename("max_pool", "SCREAMING-KEBAB-CASE").unwrap(), "MAX-POOL");
        assert_eq!(super::rename("max_pool", "kebab-case").unwrap(), "max-pool");
        assert_eq!(super::rename("x", "Klingon"), None);
    }

    #[test]
    fn ignores_what_it_does_not_understand() {
        let f = read(named(quote::quote! { #[serde(flatten, bound = "T: X", 7)] #[doc = "x"] inner: u8 }));
        assert!(f.rename.is_none() && f.default.is_none() && f.deserialize_with.is_none() && !f.skip);
    }
}

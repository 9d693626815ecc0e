//! Reads the `#[serde(...)]` attributes of a field that change how its value is read, so that a
//! login form and a fixed value read a field exactly as the configuration loader (serde) does:
//! `rename`, `default`, `with` / `deserialize_with`, and `skip` / `skip_deserializing`.
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
}

/// serde's `default` on a field.
pub(crate) enum SerdeDefault {
    /// `default`: `Default::default()`.
    Trait,
    /// `default = "path"`: `path()`.
    Path(syn::Path),
}

impl SerdeField {
    pub(crate) fn from_attrs(attrs: &[syn::Attribute]) -> Self {
        let mut out = SerdeField::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
            let Meta::List(list) = &attr.meta else { continue };
            let Ok(items) = NestedMeta::parse_meta_list(list.tokens.clone()) else { continue };
            for item in &items {
                if let NestedMeta::Meta(meta) = item {
                    out.read(meta);
                }
            }
        }
        out
    }

    fn read(&mut self, meta: &Meta) {
        let Some(key) = meta.path().get_ident().map(ToString::to_string) else { return };
        match (key.as_str(), meta) {
            ("skip" | "skip_deserializing", Meta::Path(_)) => self.skip = true,
            ("default", Meta::Path(_)) => self.default = Some(SerdeDefault::Trait),
            ("default", Meta::NameValue(nv)) => {
                self.default = path_in(&nv.value).map(SerdeDefault::Path).or(self.default.take());
            }
            ("rename", Meta::NameValue(nv)) => {
                self.rename = lit_str(ungroup(&nv.value)).map(|s| s.value()).or(self.rename.take());
            }
            ("rename", Meta::List(list)) => {
                let Ok(items) = NestedMeta::parse_meta_list(list.tokens.clone()) else { return };
                for item in &items {
                    if let NestedMeta::Meta(Meta::NameValue(nv)) = item
                        && nv.path.is_ident("deserialize")
                        && let Some(s) = lit_str(ungroup(&nv.value))
                    {
                        self.rename = Some(s.value());
                    }
                }
            }
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
    fn ignores_what_it_does_not_understand() {
        let f = read(named(quote::quote! { #[serde(flatten, bound = "T: X", 7)] #[doc = "x"] inner: u8 }));
        assert!(f.rename.is_none() && f.default.is_none() && f.deserialize_with.is_none() && !f.skip);
    }
}

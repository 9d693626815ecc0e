//! Generates the `Connection` impl from a validated input: scope, name, ttl, max_entries,
//! health-check policy, the login-form description and the form constructor. No user-input
//! checks happen here.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Type};

use super::ast::{Field, HealthCheck, Input, Source};
use super::serde_attrs::SerdeDefault;
use crate::attr::scope::Scope;
use crate::attr::ttl;
use crate::paths;

/// The `Connection` impl, wrapped in `const _: () = { ... };`.
pub(crate) fn expand(input: &Input<'_>) -> TokenStream {
    let private = paths::private(input.args.krate.as_ref());
    let fields = input.fields.as_deref().unwrap_or_default();
    let items = policy_items(input, &private);

    let form_fields =
        fields.iter().filter(|f| matches!(f.source(), Source::Form)).map(|f| form_field(f, &private));
    let from_form = from_form(input, &private);
    let forget = forget_secrets(input, &private);
    let ident = input.ident;
    let mut generics = input.generics.clone();
    if generics.type_params().next().is_some() {
        // A field type that mentions a type parameter needs the bound on the impl.
        let where_clause = generics.make_where_clause();
        where_clause.predicates.extend(fields.iter().filter_map(|f| bound(f, &private)));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #private::Connection for #ident #ty_generics #where_clause {
                #items
                const FORM: &'static [#private::FormField] = &[#(#form_fields),*];
                #from_form
                #forget
            }
        };
    }
}

/// `fn forget_secrets`: wipes every secret field (by attribute or by type) after a login.
fn forget_secrets(input: &Input<'_>, private: &TokenStream) -> TokenStream {
    let fields = input.fields.as_deref().unwrap_or_default();
    let wipes: Vec<TokenStream> = fields
        .iter()
        .filter(|f| f.is_secret())
        .map(|f| {
            let (ident, ty) = (f.ident, f.ty);
            let forget = quote_spanned!(ty.span()=> <#ty as #private::macro_support::Forget>::forget);
            quote!(#forget(&mut self.#ident);)
        })
        .collect();
    if wipes.is_empty() {
        return TokenStream::new();
    }
    quote! {
        fn forget_secrets(&mut self) {
            #(#wipes)*
        }
    }
}

/// Scope, name and caching policy; only what differs from the trait's defaults.
fn policy_items(input: &Input<'_>, private: &TokenStream) -> TokenStream {
    let args = &input.args;
    let scope = match args.scope.as_deref().copied().unwrap_or(Scope::Global) {
        Scope::Global => quote!(#private::GlobalScope),
        Scope::Session => quote!(#private::SessionScope),
    };
    let name = args.name.as_ref().map_or_else(|| snake_case(&input.ident.to_string()), |n| n.value());
    let mut items = quote! {
        type Scope = #scope;
        const NAME: &'static str = #name;
    };
    if let Some(d) = &args.ttl {
        let d = ttl::tokens(**d, private);
        items.extend(quote! {
            const TTL: #private::core::option::Option<#private::core::time::Duration> =
                #private::core::option::Option::Some(#d);
        });
    }
    if let Some(n) = &args.max_entries {
        let n = **n;
        items.extend(quote! {
            const MAX_ENTRIES: #private::core::option::Option<u64> = #private::core::option::Option::Some(#n);
        });
    }
    if let Some(d) = &args.refresh {
        let d = ttl::tokens(**d, private);
        items.extend(quote! {
            const REFRESH: #private::core::option::Option<#private::core::time::Duration> =
                #private::core::option::Option::Some(#d);
        });
    }
    if let Some(h) = args.health_check {
        let h = match h {
            HealthCheck::EveryUse => quote!(#private::HealthCheck::EveryUse),
            HealthCheck::OnError => quote!(#private::HealthCheck::OnError),
            HealthCheck::Interval(d) => {
                let d = ttl::tokens(d, private);
                quote!(#private::HealthCheck::Interval(#d))
            }
        };
        items.extend(quote!(const HEALTH_CHECK: #private::HealthCheck = #h;));
    }
    items
}

/// One `FormField` of `FORM`: a field the user fills in.
fn form_field(f: &Field<'_>, private: &TokenStream) -> TokenStream {
    let ty = f.ty;
    let name = f.name();
    let label = label(f);
    let kind = match (f.secret, &f.serde.deserialize_with) {
        (Some(_), _) => quote!(#private::FieldKind::Password),
        // Read by the app's own function: the type says nothing about the input, except a secret.
        (None, Some(_)) if f.is_secret() => quote!(#private::FieldKind::Password),
        (None, Some(_)) => quote!(#private::FieldKind::Text),
        (None, None) => quote_spanned!(ty.span()=> <#ty as #private::FormValue>::KIND),
    };
    let default = option_str(f.default.as_ref().map(|d| d.text.as_str()), private);
    let required = if f.default.is_some() || f.serde.default.is_some() {
        quote!(false)
    } else if f.serde.deserialize_with.is_some() {
        quote!(true)
    } else {
        quote_spanned!(ty.span()=> <#ty as #private::FormValue>::REQUIRED)
    };
    quote! {
        #private::FormField { name: #name, label: #label, kind: #kind, default: #default, required: #required }
    }
}

/// The bound a field's type needs on a generic impl: what reading it requires.
fn bound(f: &Field<'_>, private: &TokenStream) -> Option<syn::WherePredicate> {
    let ty = f.ty;
    match f.source() {
        Source::Skipped if f.serde.default.is_some() => None,
        Source::Skipped => Some(syn::parse_quote!(#ty: #private::core::default::Default)),
        _ if f.serde.deserialize_with.is_some() => None,
        Source::Fixed => Some(syn::parse_quote!(#ty: #private::serde::de::DeserializeOwned)),
        Source::Form => Some(syn::parse_quote!(#ty: #private::FormValue)),
    }
}

/// serde's `default` of a field as an `absent` function: it applies when nothing is given, as it
/// does when loading config.
fn serde_default(f: &Field<'_>, private: &TokenStream) -> Option<TokenStream> {
    let ty = f.ty;
    let some = quote!(#private::core::option::Option::Some);
    Some(match f.serde.default.as_ref()? {
        SerdeDefault::Trait => {
            quote_spanned!(ty.span()=> || #some(<#ty as #private::core::default::Default>::default()))
        }
        SerdeDefault::Path(path) => quote!(|| #some(#path())),
        SerdeDefault::Container(path) => {
            let ident = f.ident;
            let whole = match path {
                Some(path) => quote!(#path()),
                None => quote!(<Self as #private::core::default::Default>::default()),
            };
            quote!(|| #some(#whole.#ident))
        }
    })
}

/// The expression reading one field into an `Option` (`None`: its problem is recorded).
fn read_field(f: &Field<'_>, form: &Ident, private: &TokenStream) -> TokenStream {
    let support = quote!(#private::macro_support);
    let ty: &Type = f.ty;
    let name = f.name();
    let label = label(f);
    let none = quote!(|| #private::core::option::Option::None);
    let serde_default = serde_default(f, private);
    match f.source() {
        // serde fills a skipped field from its `default = "path"` if it has one.
        Source::Skipped => match serde_default {
            Some(default) => quote!((#default)()),
            None => quote_spanned!(ty.span()=> #support::skipped::<#ty>()),
        },
        // Fixed by the app: deserialized from its TOML value.
        Source::Fixed => {
            let default = option_str(f.default.as_ref().map(|d| d.toml.as_str()), private);
            let (deserialize, absent) = match &f.serde.deserialize_with {
                Some(path) => (quote!(#path), serde_default.unwrap_or(none)),
                None => (
                    quote_spanned!(ty.span()=> #support::deserialize_fixed::<#ty>),
                    serde_default
                        .unwrap_or_else(|| quote_spanned!(ty.span()=> #support::absent_fixed::<#ty>)),
                ),
            };
            let secret = f.is_secret();
            quote!(#form.fixed(#name, #label, #default, #deserialize, #absent, #secret))
        }
        // In the form: parsed from the submitted text.
        Source::Form => {
            let default = option_str(f.default.as_ref().map(|d| d.text.as_str()), private);
            let (parse, absent) = match &f.serde.deserialize_with {
                Some(path) => {
                    let text = Ident::new("__text", Span::mixed_site());
                    (quote!(|#text| #support::parse_with(#text, #path)), serde_default.unwrap_or(none))
                }
                None => (
                    quote_spanned!(ty.span()=> <#ty as #private::FormValue>::from_form_value),
                    serde_default
                        .unwrap_or_else(|| quote_spanned!(ty.span()=> <#ty as #private::FormValue>::absent)),
                ),
            };
            let secret = f.is_secret();
            quote!(#form.field(#name, #label, #default, #parse, #absent, #secret))
        }
    }
}

/// `fn from_form`: reads every field, then builds `Self` or reports all problems at once.
fn from_form(input: &Input<'_>, private: &TokenStream) -> TokenStream {
    let fields = input.fields.as_deref().unwrap_or_default();
    let support = quote!(#private::macro_support);
    // Locals with mixed-site spans cannot clash with anything the user named.
    let values = Ident::new("__values", Span::mixed_site());
    let form = Ident::new("__form", Span::mixed_site());
    let locals: Vec<Ident> =
        (0..fields.len()).map(|i| format_ident!("__f{}", i, span = Span::mixed_site())).collect();
    let reads = fields.iter().zip(&locals).map(|(f, local)| {
        let read = read_field(f, &form, private);
        quote!(let #local = #read;)
    });
    let idents = fields.iter().map(|f| f.ident);
    let result = quote!(#private::core::result::Result);
    let body = if fields.is_empty() {
        quote! {
            let _ = #values;
            #result::Ok(Self {})
        }
    } else {
        quote! {
            let mut #form = #support::FormReader::new(#values, #private::core::any::type_name::<Self>());
            #(#reads)*
            match (#(#locals,)*) {
                (#(#private::core::option::Option::Some(#locals),)*) => #result::Ok(Self { #(#idents: #locals),* }),
                _ => #result::Err(#form.into_error()),
            }
        }
    };
    quote! {
        fn from_form(#values: &#private::FormValues) -> #result<Self, #private::FormError> {
            #body
        }
    }
}

/// What the derive emits next to its errors, so that uses of the type do not fail too.
pub(crate) fn fallback(input: &Input<'_>) -> TokenStream {
    let private = paths::private(input.args.krate.as_ref());
    let ident = input.ident;
    let name = snake_case(&ident.to_string());
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #private::Connection for #ident #ty_generics #where_clause {
                type Scope = #private::GlobalScope;
                const NAME: &'static str = #name;
            }
        };
    }
}

fn option_str(s: Option<&str>, private: &TokenStream) -> TokenStream {
    match s {
        Some(s) => quote!(#private::core::option::Option::Some(#s)),
        None => quote!(#private::core::option::Option::None),
    }
}

/// The field's form label: `label = "..."`, else from its identifier (`db_host` -> `Db host`,
/// whatever serde renames it to).
fn label(f: &Field<'_>) -> String {
    let ident = f.ident.to_string();
    f.label.as_ref().map_or_else(|| label_for(ident.strip_prefix("r#").unwrap_or(&ident)), |l| l.value())
}

/// `db_host` -> `Db host`.
fn label_for(name: &str) -> String {
    let spaced = name.trim_matches('_').replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => name.to_owned(),
    }
}

/// `WarehouseDB` -> `warehouse_db`, `HTTPClient` -> `http_client`.
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.trim_start_matches("r#").chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{label_for, snake_case};

    #[test]
    fn names() {
        assert_eq!(snake_case("Warehouse"), "warehouse");
        assert_eq!(snake_case("WarehouseDB"), "warehouse_db");
        assert_eq!(snake_case("HTTPClient"), "http_client");
        assert_eq!(snake_case("Pg2Pool"), "pg2_pool");
        assert_eq!(snake_case("already_snake"), "already_snake");
        assert_eq!(label_for("db_host"), "Db host");
        assert_eq!(label_for("password"), "Password");
    }
}

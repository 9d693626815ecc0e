//! Generates a cached function from a validated [`Plan`]:
//!
//! ```text
//! <user's attributes> <vis> async fn name(<args>) -> <ret> {
//!     <checks: cached_value::<T>(), global_conn::<P>() ...>   // no run-time cost
//!     name::__load(<key>, async move { <body> }).await           // the runtime's hit path
//! }
//!
//! #[doc = "Cache controls of ..."]
//! <vis> mod name {                      // the type namespace: it coexists with `fn name`
//!     use super::*;                     // the user's types, as written in the signature
//!     static __RESOURCE: Resource<K, V> = Resource::new(module_path!(), scope, ttl, ...);
//!     fn __load(..) -> impl Future      // `try_get_or_run` (global Result), `try_get`
//!                                       // (session Result) or `get_or_run` (plain T)
//!     fn resource(), async fn clear(), async fn invalidate(<key args>), fn stats()
//! }
//! ```
//!
//! Type requirements are checked by calls to `macro_support` functions whose bounds carry
//! `#[diagnostic::on_unimplemented]` messages, spanned at the user's type (key argument, value,
//! return type, provider), so a mistake is reported there and says what to do.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Visibility};

use super::valid::{Key, Plan, is_not_key};
use crate::attr::scope::Scope;
use crate::attr::ttl;
use crate::paths;

pub(crate) fn expand(plan: &Plan<'_>) -> TokenStream {
    let private = paths::private(plan.args.krate.as_ref());
    let support = quote!(#private::macro_support);
    // The same, as named from inside `mod name`.
    let inner_private = paths::private(plan.args.krate.as_ref().map(from_child_module).as_ref());
    let item = plan.item;
    let ident = &item.sig.ident;
    let vis = &item.vis;

    let (_, key_expr) = key(plan, &private);
    let value = &plan.output.value;

    // Checks spanned at the user's types, so that a mistake is reported there.
    let mut checks = quote_spanned!(value.span()=> #support::cached_value::<#value>(););
    if plan.args.shared.is_some() {
        checks.extend(quote_spanned!(value.span()=> #support::shared_value::<#value>();));
        for ty in key_types(plan, &private) {
            checks.extend(quote_spanned!(ty.span()=> #support::shared_key::<#ty>();));
        }
    }
    if plan.args.scope() == Scope::Global {
        for p in &plan.providers {
            checks.extend(quote_spanned!(p.span()=> #support::global_conn::<#p>();));
        }
    }
    // For a `Result` of a session function, the call of `__load` (whose bound is
    // `E: CacheError`) is spanned at the return type, where an error type without
    // `From<connscope::Error>` is then reported. A global function takes any error type.
    let load = match &plan.output.result {
        Some(ty) => {
            let mut module = ident.clone();
            module.set_span(ty.span());
            quote_spanned!(ty.span()=> #module::__load)
        }
        None => quote!(#ident::__load),
    };

    // The wrapper: the user's signature (destructuring patterns replaced by plain bindings) and
    // body, run as the loader of a cache miss.
    let outer_attrs = item.attrs.iter().filter(|a| matches!(a.style, syn::AttrStyle::Outer));
    let inner_attrs = item.attrs.iter().filter(|a| !matches!(a.style, syn::AttrStyle::Outer));
    let sig = &item.sig;
    let (constness, asyncness, safety, fn_token, generics) =
        (&sig.constness, &sig.asyncness, &sig.safety, &sig.fn_token, &sig.generics);
    let where_clause = &sig.generics.where_clause;
    let output = &sig.output;
    let params = plan.inputs.iter().map(|a| {
        let (param, ty) = (&a.param, a.ty);
        // `#[not_key]` is read by this macro and is no attribute rustc knows: it goes.
        let attrs = a.attrs.iter().filter(|attr| !is_not_key(attr));
        quote!(#(#attrs)* #param: #ty)
    });
    let destructure = plan.inputs.iter().filter_map(|a| {
        let pat = a.destructure?;
        let binding = &a.binding;
        Some(quote!(let #pat = #binding;))
    });
    let block = &item.block;
    let loader = quote! {
        async move {
            #(#destructure)*
            #block
        }
    };
    let call = match &plan.output.result {
        Some(ty) => quote_spanned!(ty.span()=> #load(#key_expr, #loader)),
        None => quote!(#load(#key_expr, #loader)),
    };
    let pending = Ident::new("__connscope_pending", Span::mixed_site());
    let wrapper = quote! {
        #(#outer_attrs)*
        #vis #constness #asyncness #safety #fn_token #ident #generics (#(#params),*) #output #where_clause {
            #(#inner_attrs)*
            #checks
            // Bound first, awaited after: a temporary in the awaited expression would keep a
            // (moved-from) copy of the body's future in this function's state, doubling its size.
            let #pending = #call;
            #pending.await
        }
    };

    // The companion module.
    let private = inner_private;
    let support = quote!(#private::macro_support);
    let (key_type, key_expr) = key(plan, &private);
    let value_type = quote!(#value);
    let scope = plan.args.scope().variant();
    let none = quote!(#private::core::option::Option::None);
    let some = quote!(#private::core::option::Option::Some);
    let ttl = plan.args.ttl.as_ref().map_or_else(
        || none.clone(),
        |d| {
            let d = ttl::tokens(**d, &private);
            quote!(#some(#d))
        },
    );
    let max_entries = plan.args.max_entries.as_ref().map_or_else(
        || none.clone(),
        |n| {
            let n = **n;
            quote!(#some(#n))
        },
    );
    let inner_vis = inner_visibility(vis);
    let release = Ident::new("__release", Span::mixed_site());
    let (on_release, release_fn) = match &plan.args.on_release {
        None => (none.clone(), TokenStream::new()),
        Some(path) => {
            let path = from_child_module(path);
            let adapt = quote_spanned!(path.span()=> #support::release::<#value_type, _, _>(&#path, value));
            (
                quote!(#some(#release)),
                quote! {
                    fn #release(value: #value_type)
                        -> #private::BoxFuture<'static, #private::core::result::Result<(), #private::HookError>>
                    {
                        #adapt
                    }
                },
            )
        }
    };
    let mut shared_fns = TokenStream::new();
    let (mut refresh, load_fn) = match plan.args.refresh {
        None => (TokenStream::new(), load_fn(plan, &private)),
        Some(_) => refresh(plan, &private),
    };
    if let Some(span) = plan.args.shared {
        let version = plan.args.version.as_ref().map_or_else(|| version_of(item), syn::LitStr::value);
        refresh.extend(quote_spanned!(span=> .__shared::<#support::RedisFeatureOn>(#support::SharedFns {
            version: #version,
            encode_key: __key_out,
            decode_key: __key_in,
            encode: __value_out,
            decode: __value_in,
        })));
        shared_fns = shared_codecs(&private, &key_type, &value_type);
    }
    let key_params = plan.inputs.iter().filter(|a| a.key.is_some()).map(|a| {
        let (binding, ty) = (&a.binding, a.ty);
        quote!(#binding: #ty)
    });
    let cfgs = item.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let fn_name = ident.to_string();
    let mod_doc = format!(
        "Cache controls of the `#[cached_resource]` function `{fn_name}`: `invalidate`, `clear`, `stats`, \
         `resource`. They act on the cache of the current scope."
    );
    let invalidate_doc = format!(
        "Removes the value cached by `{fn_name}` for these arguments from the current scope (its release \
         hook runs). Returns whether there was one."
    );
    let warm_doc = format!(
        "Loads the value of `{fn_name}` for these arguments ahead of use, unless the current scope holds it \
         (a stale one is refreshed); returns what `{fn_name}` returns."
    );
    let warm_params = plan.inputs.iter().map(|a| {
        let (binding, ty) = (&a.binding, a.ty);
        quote!(#binding: #ty)
    });
    let warm_args = plan.inputs.iter().map(|a| &a.binding);
    let companion = quote! {
        #(#cfgs)*
        #[doc = #mod_doc]
        #[allow(dead_code)]
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;

            static __RESOURCE: #private::Resource<#key_type, #value_type> = #private::Resource::new(
                #private::core::module_path!(),
                #private::Scope::#scope,
                #ttl,
                #max_entries,
                #on_release,
            )#refresh;

            #release_fn

            #shared_fns

            #load_fn

            /// The cached resource behind the function (for `stats_in`, `cache`, ...).
            #[inline]
            #inner_vis fn resource() -> &'static #private::Resource<#key_type, #value_type> {
                &__RESOURCE
            }

            /// Removes every value of the current scope (their release hooks run).
            #inner_vis async fn clear() -> #private::ReleaseReport {
                __RESOURCE.clear().await
            }

            #[doc = #invalidate_doc]
            #inner_vis async fn invalidate #generics (#(#key_params),*) -> bool #where_clause {
                __RESOURCE.invalidate(&#key_expr).await
            }

            #[doc = #warm_doc]
            #inner_vis async fn warm #generics (#(#warm_params),*) #output #where_clause {
                super::#ident(#(#warm_args),*).await
            }

            /// Statistics of the current scope's cache.
            #inner_vis fn stats() -> #private::StatsSnapshot {
                __RESOURCE.stats()
            }
        }
    };

    quote!(#wrapper #companion)
}

/// `__load`: the runtime's future itself, no extra state machine on the hit path.
fn load_fn(plan: &Plan<'_>, private: &TokenStream) -> TokenStream {
    let support = quote!(#private::macro_support);
    let future = quote!(#private::core::future::Future);
    let (key_type, _) = key(plan, private);
    let value = &plan.output.value;
    match &plan.output.result {
        // Global: any error type. A failed load is not shared (a caller that waited for it runs
        // its own body) and a shut-down runtime runs the body uncached, so connscope never has
        // to make up an `E`.
        Some(_) if plan.args.scope() == Scope::Global => quote! {
            #[doc(hidden)]
            #[inline]
            pub(super) fn __load<__E, __F>(key: #key_type, loader: __F)
                -> impl #future<Output = #private::core::result::Result<#value, __E>>
            where
                __F: #future<Output = #private::core::result::Result<#value, __E>>,
            {
                __RESOURCE.try_get_or_run(key, loader)
            }
        },
        // Session: outside a session (or in an ended one) connscope reports its own error
        // through `E: From<connscope::Error>`.
        Some(_) => quote! {
            #[doc(hidden)]
            #[inline]
            pub(super) fn __load<__E, __M, __F>(key: #key_type, loader: __F)
                -> impl #future<Output = #private::core::result::Result<#value, __E>>
            where
                __E: #support::CacheError<__M>,
                __F: #future<Output = #private::core::result::Result<#value, __E>>,
            {
                __RESOURCE.try_get(key, loader)
            }
        },
        None => quote! {
            #[doc(hidden)]
            #[inline]
            pub(super) fn __load<__F>(key: #key_type, loader: __F) -> impl #future<Output = #value>
            where
                __F: #future<Output = #value>,
            {
                __RESOURCE.get_or_run(key, loader)
            }
        },
    }
}

/// With `refresh = "background"`: the resource's refresh settings, and a `__load` whose loader
/// moves to a task of its own when it refreshes a stale value (so it is `Send + 'static`).
fn refresh(plan: &Plan<'_>, private: &TokenStream) -> (TokenStream, TokenStream) {
    let support = quote!(#private::macro_support);
    let future = quote!(#private::core::future::Future);
    let (key_type, _) = key(plan, private);
    let value = &plan.output.value;
    let max_stale = plan.args.max_stale.as_ref().map_or_else(
        || quote!(#private::core::option::Option::None),
        |d| {
            let d = ttl::tokens(**d, private);
            quote!(#private::core::option::Option::Some(#d))
        },
    );
    let same = Ident::new("__same_instance", Span::mixed_site());
    let settings = quote! {
        .refresh_in_background(#max_stale).same_instance(#same)
    };
    let send = quote!(#private::core::marker::Send);
    let load = match &plan.output.result {
        Some(_) if plan.args.scope() == Scope::Global => quote! {
            #[doc(hidden)]
            #[inline]
            pub(super) fn __load<__E, __F>(key: #key_type, loader: __F)
                -> impl #future<Output = #private::core::result::Result<#value, __E>>
            where
                __E: #send + 'static,
                __F: #future<Output = #private::core::result::Result<#value, __E>> + #send + 'static,
            {
                __RESOURCE.try_get_or_run_refreshing(key, loader)
            }
        },
        Some(_) => quote! {
            #[doc(hidden)]
            #[inline]
            pub(super) fn __load<__E, __M, __F>(key: #key_type, loader: __F)
                -> impl #future<Output = #private::core::result::Result<#value, __E>>
            where
                __E: #support::CacheError<__M> + #private::core::marker::Send + 'static,
                __F: #future<Output = #private::core::result::Result<#value, __E>>
                    + #private::core::marker::Send + 'static,
            {
                __RESOURCE.try_get_refreshing(key, loader)
            }
        },
        None => quote! {
            #[doc(hidden)]
            #[inline]
            pub(super) fn __load<__F>(key: #key_type, loader: __F) -> impl #future<Output = #value>
            where
                __F: #future<Output = #value> + #private::core::marker::Send + 'static,
            {
                __RESOURCE.get_or_run_refreshing(key, loader)
            }
        },
    };
    let load = quote! {
        #load

        /// `Arc::ptr_eq` for an `Arc` value, else never the same.
        fn #same(a: &#value, b: &#value) -> bool {
            #[allow(unused_imports)]
            use #support::{SameArc as _, SameOther as _};
            (&#support::SameProbe::<#value>::new()).same(a, b)
        }
    };
    (settings, load)
}

/// The key type (named at the attribute) and the key expression (each part checked at the
/// argument's type, where a type that cannot be a key is reported).
fn key(plan: &Plan<'_>, private: &TokenStream) -> (TokenStream, TokenStream) {
    let support = quote!(#private::macro_support);
    let (types, exprs): (Vec<TokenStream>, Vec<TokenStream>) = plan
        .inputs
        .iter()
        .filter_map(|a| {
            let binding = &a.binding;
            Some(match a.key.as_ref()? {
                Key::Owned(ty) => {
                    (quote!(#ty), quote_spanned!(ty.span()=> #support::key_arg::<#ty>(&#binding)))
                }
                Key::Borrowed(ty) => (
                    quote!(<#ty as #private::std::borrow::ToOwned>::Owned),
                    quote_spanned!(a.ty.span()=> #support::key_ref::<#ty>(#binding)),
                ),
                Key::Conn { by_ref } => {
                    let conn = if *by_ref { quote!(#binding) } else { quote!(&#binding) };
                    (quote!(#private::ConnId), quote_spanned!(a.ty.span()=> #private::Conn::id(#conn)))
                }
            })
        })
        .unzip();
    // One key argument is the key itself; several make a tuple.
    if let ([ty], [expr]) = (&types[..], &exprs[..]) {
        return (ty.clone(), expr.clone());
    }
    (quote!((#(#types,)*)), quote!((#(#exprs,)*)))
}

/// With `shared = true`: the key's and the value's codecs (serde when the types have it; the
/// checks in the wrapper report them otherwise, once).
fn shared_codecs(private: &TokenStream, key: &TokenStream, value: &TokenStream) -> TokenStream {
    let support = quote!(#private::macro_support);
    let option = quote!(#private::core::option::Option);
    let vec = quote!(#private::std::vec::Vec<u8>);
    let codec = |name: &str, ty: &TokenStream| {
        let (out, inn) = (format_ident!("__{name}_out"), format_ident!("__{name}_in"));
        quote! {
            fn #out(v: &#ty) -> #option<#vec> {
                #[allow(unused_imports)]
                use #support::{NoCodec as _, SerdeCodec as _};
                (&#support::CodecProbe::<#ty>::new()).encode(v)
            }
            fn #inn(b: &[u8]) -> #option<#ty> {
                #[allow(unused_imports)]
                use #support::{NoCodec as _, SerdeCodec as _};
                (&#support::CodecProbe::<#ty>::new()).decode(b)
            }
        }
    };
    let mut out = codec("key", key);
    out.extend(codec("value", value));
    out
}

/// The types of the key's arguments, as the checks name them.
fn key_types(plan: &Plan<'_>, private: &TokenStream) -> Vec<TokenStream> {
    plan.inputs
        .iter()
        .filter_map(|a| match a.key.as_ref()? {
            Key::Owned(ty) => Some(quote_spanned!(ty.span()=> #ty)),
            Key::Borrowed(ty) => {
                Some(quote_spanned!(a.ty.span()=> <#ty as #private::std::borrow::ToOwned>::Owned))
            }
            Key::Conn { .. } => None,
        })
        .collect()
}

/// The default version of shared values: a digest (FNV-1a, 64 bits) of the function's tokens,
/// so a changed signature or body never reads values written by the previous one.
fn version_of(item: &syn::ItemFn) -> String {
    let text = quote!(#item).to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The visibility, inside `mod name`, of items as visible as the function outside it.
fn inner_visibility(vis: &Visibility) -> TokenStream {
    match vis {
        Visibility::Public(p) => quote!(#p),
        Visibility::Inherited => quote!(pub(super)),
        Visibility::Restricted(r) => {
            let path = &*r.path;
            let first = path.segments.first().map(|s| s.ident.to_string());
            match first.as_deref() {
                Some("crate") => quote!(#vis),
                Some("self") if path.segments.len() == 1 => quote!(pub(super)),
                Some("super") => quote!(pub(in super::#path)),
                _ => quote!(#vis),
            }
        }
    }
}

/// A path written next to the function, as seen from inside `mod name` (one level down).
fn from_child_module(path: &syn::Path) -> syn::Path {
    let mut path = path.clone();
    match path.segments.first().map(|s| s.ident.to_string()).as_deref() {
        Some("self") => {
            let first = &mut path.segments[0];
            first.ident = Ident::new("super", first.ident.span());
        }
        Some("super") if path.leading_colon.is_none() => {
            let span = path.segments[0].ident.span();
            path.segments.insert(0, syn::PathSegment::from(Ident::new("super", span)));
        }
        _ => {}
    }
    path
}

//! Checks the function under `#[cached_resource]` and turns it into a [`Plan`]: which arguments
//! form the key (and how), what the cached value is, which connections it takes. Every problem
//! is recorded (each at its own token); a plan is returned only when there is none.
//!
//! Checks that need types (is the key `Hash`? is that provider session-scoped?) cannot run here;
//! `expand` emits them as trait checks spanned at the user's tokens instead.

use darling::Error;
use darling::error::Accumulator;
use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    Attribute, FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments, ReturnType, Type,
    TypePath,
};

use super::args::Args;
use crate::attr::scope::Scope;

/// What to generate for a valid cached function.
pub(crate) struct Plan<'a> {
    pub(crate) item: &'a ItemFn,
    pub(crate) args: Args,
    pub(crate) inputs: Vec<Arg<'a>>,
    pub(crate) output: Output,
    /// The `P` of every `Conn<P>` the arguments mention (checked for a global function).
    pub(crate) providers: Vec<&'a Type>,
}

/// One argument of the cached function.
pub(crate) struct Arg<'a> {
    pub(crate) attrs: &'a [Attribute],
    /// The pattern of the wrapper's parameter: the user's `x` / `mut x`, or a generated name
    /// when the user destructures.
    pub(crate) param: proc_macro2::TokenStream,
    /// The name the argument's value goes by in the wrapper.
    pub(crate) binding: Ident,
    /// The user's destructuring pattern, bound from `binding` at the top of the body.
    pub(crate) destructure: Option<&'a Pat>,
    pub(crate) ty: &'a Type,
    pub(crate) key: Option<Key<'a>>,
}

/// How an argument enters the key.
pub(crate) enum Key<'a> {
    /// By value: a clone.
    Owned(&'a Type),
    /// By reference (`&T`): an owned copy of the `T`.
    Borrowed(&'a Type),
    /// A connection (`Conn<P>` or `&Conn<P>`): its identity, `Conn::id()`.
    Conn { by_ref: bool },
}

/// What the function returns.
pub(crate) struct Output {
    /// The cached value: the `T` of `Result<T, E>`, or the whole return type.
    pub(crate) value: Type,
    /// The whole return type when it is a `Result<T, E>` (only `Ok` is cached).
    pub(crate) result: Option<Type>,
}

pub(crate) fn validate(item: &ItemFn, args: Args) -> darling::Result<Plan<'_>> {
    let mut acc = Error::accumulator();
    let errors = &mut acc;
    let sig = &item.sig;
    let scope = args.scope();

    if let Some(c) = &sig.constness {
        errors.push(Error::custom("a cached function cannot be a `const fn`: remove `const`").with_span(c));
    }
    if sig.asyncness.is_none() {
        errors.push(
            Error::custom(
                "`#[cached_resource]` caches `async fn`s only: concurrent callers of a missing key wait for \
                 the one load in progress, and values are released by async hooks. Write \
                 `async fn` and `.await` the calls",
            )
            .with_span(&sig.fn_token),
        );
    }
    if let Some(abi) = &sig.abi {
        errors.push(Error::custom("a cached function cannot have an `extern` ABI: remove it").with_span(abi));
    }
    if let Some(v) = &sig.variadic {
        errors.push(Error::custom("a cached function cannot be variadic").with_span(v));
    }
    for param in &sig.generics.params {
        let what = match param {
            GenericParam::Lifetime(_) => continue,
            GenericParam::Type(_) => "type",
            GenericParam::Const(_) => "const",
        };
        errors.push(
            Error::custom(format!(
                "`#[cached_resource]` cannot cache a generic function (it has a {what} parameter): its \
                 cache is one `static`, which needs concrete types. Cache one non-generic function per \
                 type instead, e.g. `async fn load_user(id: u64)`"
            ))
            .with_span(param),
        );
    }

    let mut inputs = Vec::new();
    let mut providers = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        let pat_ty = match input {
            FnArg::Receiver(r) => {
                for attr in r.attrs.iter().filter(|a| is_not_key(a)) {
                    errors.push(
                        Error::custom(
                            "`#[not_key]` leaves an argument out of the cache key; it goes on an argument \
                             like `#[not_key] conn: &Conn<P>`, not on `self`",
                        )
                        .with_span(attr.path()),
                    );
                }
                errors.push(
                    Error::custom(
                        "`#[cached_resource]` cannot cache a method: its cache is a `static` shared by every \
                         instance. Move the body into a free `async fn` that takes what it needs from `self` \
                         as arguments, cache that function, and call it from the method",
                    )
                    .with_span(r),
                );
                continue;
            }
            FnArg::Typed(pat_ty) => pat_ty,
        };
        let ty = &*pat_ty.ty;
        let mut scan = Scan::default();
        scan.visit_type(ty);
        for span in &scan.impl_traits {
            errors.push(
                Error::custom(
                    "`#[cached_resource]` cannot cache a function with an `impl Trait` argument: that makes \
                     it generic, and its cache needs concrete types. Take a concrete type (`&str` rather \
                     than `impl AsRef<str>`), or `&dyn Trait` in a `#[not_key]` argument (not in the key)",
                )
                .with_span(span),
            );
        }
        report_self(&scan, errors);
        providers.extend(scan.providers);

        let (param, binding, destructure, named) = match &*pat_ty.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                let name = p.ident.to_string();
                (quote::quote!(#p), p.ident.clone(), None, Some(name))
            }
            Pat::Wild(_) => {
                let binding = Ident::new(&format!("__arg{i}"), Span::mixed_site());
                (quote::quote!(#binding), binding, None, Some("_".to_owned()))
            }
            other => {
                let binding = Ident::new(&format!("__arg{i}"), Span::mixed_site());
                (quote::quote!(#binding), binding, Some(other), None)
            }
        };
        // `#[not_key]`, `_conn`, `_`: not part of the key. A `Conn` is keyed by its identity.
        let marked = not_key(&pat_ty.attrs, destructure.is_some(), errors);
        let in_key = !marked && !named.as_deref().is_some_and(|n| n.starts_with('_'));
        let key = if !in_key {
            None
        } else {
            match ty {
                Type::Reference(r) if r.mutability.is_some() => {
                    errors.push(
                        Error::custom(
                            "a `&mut` argument cannot be part of the cache key (the body runs once for many \
                             callers): mark it `#[not_key]` to leave it out of the key, or take it by value \
                             or by `&`",
                        )
                        .with_span(ty),
                    );
                    None
                }
                Type::Reference(r) if is_conn(&r.elem) => Some(Key::Conn { by_ref: true }),
                _ if is_conn(ty) => Some(Key::Conn { by_ref: false }),
                Type::Reference(r) => Some(Key::Borrowed(&r.elem)),
                _ => Some(Key::Owned(ty)),
            }
        };
        inputs.push(Arg { attrs: &pat_ty.attrs, param, binding, destructure, ty, key });
    }

    let output = match &sig.output {
        ReturnType::Default => Some(Output { value: syn::parse_quote!(()), result: None }),
        ReturnType::Type(_, ty) => {
            let mut scan = Scan::default();
            scan.visit_type(ty);
            report_self(&scan, errors);
            if let Some(span) = scan.impl_traits.first() {
                errors.push(
                    Error::custom(
                        "a cached function must return a nameable type, not `impl Trait`: its values are \
                         stored in a `static`. Return a concrete type (wrap it in `Arc` to share it)",
                    )
                    .with_span(span),
                );
                None
            } else {
                Some(match result_value(ty) {
                    Some(value) => Output { value: value.clone(), result: Some((**ty).clone()) },
                    None => Output { value: (**ty).clone(), result: None },
                })
            }
        }
    };
    if scope == Scope::Session && output.as_ref().is_some_and(|o| o.result.is_none()) {
        let span = match &sig.output {
            ReturnType::Default => sig.paren_token.span.join(),
            ReturnType::Type(_, ty) => ty.span(),
        };
        errors.push(
            Error::custom(
                "a `scope = \"session\"` cached function must return `Result<T, E>`: called outside a \
                 session it has no cache to use, and must be able to say so. Return `Result<T, E>` with \
                 `E: From<connscope::Error>` (`connscope::Error` itself works)",
            )
            .with_span(&span),
        );
    }

    check_refresh(&args, sig, errors);
    check_shared(&args, scope, &inputs, errors);

    let output = output.unwrap_or(Output { value: syn::parse_quote!(()), result: None });
    acc.finish_with(Plan { item, args, inputs, output, providers })
}

/// `refresh` needs a ttl to be past, `max_stale` needs `refresh`, and a background refresh runs
/// the body after the call returned, so the body cannot borrow the caller's arguments.
fn check_refresh(args: &Args, sig: &syn::Signature, errors: &mut Accumulator) {
    if let Some(max_stale) = &args.max_stale
        && args.refresh.is_none()
    {
        errors.push(
            Error::custom(
                "`max_stale` is how long past its ttl a value is served while it is refreshed in the \
                 background: add `refresh = \"background\"`, or leave `max_stale` out",
            )
            .with_span(&max_stale.span()),
        );
    }
    let Some(refresh) = &args.refresh else { return };
    if args.ttl.is_none() {
        errors.push(
            Error::custom(
                "`refresh = \"background\"` refreshes values past their ttl: add a `ttl` (e.g. `ttl = \"5m\"`)",
            )
            .with_span(&refresh.span()),
        );
    }
    for input in &sig.inputs {
        if let FnArg::Typed(arg) = input
            && let Type::Reference(r) = &*arg.ty
        {
            // A syn error spans the whole type (`&str`), not only its first token.
            errors.push(Error::from(syn::Error::new_spanned(
                r,
                "with `refresh = \"background\"` the body also runs after the call returned, so it cannot \
                 borrow its arguments: take this argument by value (e.g. `String` instead of `&str`, \
                 `Conn<P>` instead of `&Conn<P>`)",
            )));
        }
    }
}

/// `shared = true` is for global values whose key crosses processes: no session scope, no
/// connection in the key; `version` only with `shared`.
fn check_shared(args: &Args, scope: Scope, inputs: &[Arg<'_>], errors: &mut Accumulator) {
    if let Some(version) = &args.version
        && args.shared.is_none()
    {
        errors.push(
            Error::custom("`version` names the version of values shared through Redis: add `shared = true`, or leave `version` out")
                .with_span(version),
        );
    }
    let Some(span) = args.shared else { return };
    if scope == Scope::Session {
        errors.push(Error::from(syn::Error::new(
            span,
            "`shared = true` shares values between app instances through Redis, but a `scope = \"session\"` \
             value belongs to one user's session: share global values only (`scope = \"global\"`), or \
             leave `shared` out",
        )));
    }
    for input in inputs {
        if let Some(Key::Conn { .. }) = input.key {
            errors.push(Error::from(syn::Error::new_spanned(
                input.ty,
                "with `shared = true` the key crosses processes, and a connection is one instance's own: \
                 leave it out of the key with `#[not_key]` (or a name starting with `_`); every instance's \
                 connection must then read the same data",
            )));
        }
    }
}

/// Whether an attribute is `#[not_key]` (however written: the checks are in [`not_key`]).
pub(crate) fn is_not_key(attr: &Attribute) -> bool {
    attr.path().is_ident("not_key")
}

/// Whether an argument is marked `#[not_key]`; records a misuse (`#[not_key(x)]`,
/// `#[not_key = ..]`, or one on a destructuring pattern).
fn not_key(attrs: &[Attribute], destructures: bool, errors: &mut Accumulator) -> bool {
    let mut marked = false;
    for attr in attrs.iter().filter(|a| is_not_key(a)) {
        marked = true;
        let arguments = match &attr.meta {
            syn::Meta::Path(_) => None,
            syn::Meta::List(list) => Some(list.delimiter.span().join()),
            syn::Meta::NameValue(nv) => Some(nv.value.span()),
        };
        if let Some(span) = arguments {
            errors.push(
                Error::custom(
                    "`#[not_key]` takes no arguments: write `#[not_key]` before the argument to leave out of \
                     the cache key, like `#[not_key] conn: &Conn<P>`",
                )
                .with_span(&span),
            );
        } else if destructures {
            errors.push(
                Error::custom(
                    "`#[not_key]` goes on a named argument, like `#[not_key] conn: &Conn<P>`: bind this \
                     pattern to a name and destructure it in the body",
                )
                .with_span(attr.path()),
            );
        }
    }
    marked
}

/// Removes every `#[not_key]` of the function's arguments (for emitting the function as written
/// next to errors: rustc knows no such attribute).
pub(crate) fn strip_not_key(item: &mut ItemFn) {
    for input in &mut item.sig.inputs {
        let attrs = match input {
            FnArg::Receiver(r) => &mut r.attrs,
            FnArg::Typed(t) => &mut t.attrs,
        };
        attrs.retain(|a| !is_not_key(a));
    }
}

/// Whether a type is spelled `Conn<P>` (any path ending in `Conn` with one type argument).
fn is_conn(ty: &Type) -> bool {
    let Type::Path(TypePath { qself: None, path, .. }) = ty else { return false };
    let Some(last) = path.segments.last() else { return false };
    let PathArguments::AngleBracketed(args) = &last.arguments else { return false };
    last.ident == "Conn" && args.args.len() == 1 && matches!(args.args[0], GenericArgument::Type(_))
}

/// `Self` means the function sits in an `impl` block, where `mod name` cannot go.
fn report_self(scan: &Scan<'_>, errors: &mut Accumulator) {
    if let Some(span) = scan.self_types.first() {
        errors.push(
            Error::custom(
                "`#[cached_resource]` works on free functions, not in `impl` blocks (it emits a companion \
                 `mod` next to the function): write a free `async fn` with concrete types, cache it, and \
                 call it from the impl",
            )
            .with_span(span),
        );
    }
}

/// The `T` of a return type spelled `Result<T, ...>` (any path ending in `Result`, so
/// `io::Result<T>` and `anyhow::Result<T>` count).
fn result_value(ty: &Type) -> Option<&Type> {
    let Type::Path(TypePath { qself: None, path, .. }) = ty else { return None };
    let last = path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// What a type mentions that matters here.
#[derive(Default)]
struct Scan<'a> {
    impl_traits: Vec<Span>,
    self_types: Vec<Span>,
    /// `P` of each `Conn<P>`.
    providers: Vec<&'a Type>,
}

impl<'a> Visit<'a> for Scan<'a> {
    fn visit_type_impl_trait(&mut self, i: &'a syn::TypeImplTrait) {
        self.impl_traits.push(i.span());
        syn::visit::visit_type_impl_trait(self, i);
    }

    fn visit_path(&mut self, path: &'a syn::Path) {
        if path.segments.first().is_some_and(|s| s.ident == "Self") {
            self.self_types.push(path.span());
        }
        if let Some(last) = path.segments.last()
            && last.ident == "Conn"
            && let PathArguments::AngleBracketed(args) = &last.arguments
        {
            let mut types = args.args.iter().filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            });
            if let (Some(p), None) = (types.next(), types.next()) {
                self.providers.push(p);
            }
        }
        syn::visit::visit_path(self, path);
    }
}

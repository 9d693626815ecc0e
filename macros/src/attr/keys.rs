//! The `key = value` lists of `#[connection(...)]` and `#[cached_resource(...)]`.
//!
//! Contract: [`Keys::entries`] hands back every well-formed entry with a known key, once, and
//! records an error for each malformed item, unknown key (with a suggestion) and repeated key.
//! It never stops at the first problem, so a user sees all mistakes of an attribute at once.

use darling::ast::NestedMeta;
use darling::error::Accumulator;
use darling::{Error, Result};
use syn::{Expr, Lit, LitStr, Meta};

use super::suggest::closest;

/// The keys an attribute accepts, and the ones already seen.
pub(crate) struct Keys {
    /// How the attribute is written in messages, e.g. `#[cached_resource]`.
    attr: &'static str,
    /// Where it is, for messages: `""` or `" on a field"`.
    place: &'static str,
    allowed: &'static [&'static str],
    /// Words users reach for that mean one of the keys (`skip` for `fixed`).
    synonyms: &'static [(&'static str, &'static str)],
    /// Keys of a sibling attribute (struct keys on a field, and back), and where they go.
    misplaced: (&'static [&'static str], &'static str),
    seen: Vec<String>,
}

/// One `key = value` (or bare `key`) entry with a known key.
pub(crate) struct Entry<'m> {
    pub(crate) key: String,
    pub(crate) meta: &'m Meta,
}

impl Keys {
    pub(crate) fn new(
        attr: &'static str,
        allowed: &'static [&'static str],
        synonyms: &'static [(&'static str, &'static str)],
    ) -> Self {
        Keys { attr, place: "", allowed, synonyms, misplaced: (&[], ""), seen: Vec::new() }
    }

    /// Says where this attribute is (`" on a field"`), for messages.
    pub(crate) fn placed(mut self, place: &'static str) -> Self {
        self.place = place;
        self
    }

    /// Keys that belong to a sibling attribute, and where that is (`"on the struct"`).
    pub(crate) fn misplaced(mut self, keys: &'static [&'static str], place: &'static str) -> Self {
        self.misplaced = (keys, place);
        self
    }

    fn list(&self) -> String {
        self.allowed.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
    }

    /// The well-formed entries of `items` with known, not yet seen keys.
    pub(crate) fn entries<'m>(
        &mut self,
        items: &'m [NestedMeta],
        errors: &mut Accumulator,
    ) -> Vec<Entry<'m>> {
        let mut out = Vec::new();
        for item in items {
            let meta = match item {
                NestedMeta::Meta(meta) => meta,
                NestedMeta::Lit(lit) => {
                    errors.push(
                        Error::custom(format!(
                            "expected `key = value` in `{}`{}, found a literal; the keys are {}",
                            self.attr,
                            self.place,
                            self.list()
                        ))
                        .with_span(lit),
                    );
                    continue;
                }
                NestedMeta::NameValueInvalidExpr(bad) => {
                    let key = path_key(&bad.path);
                    if self.known(&key, &bad.path, errors) {
                        errors.push(
                            Error::custom(format!("`{key} = ...` needs a literal or a path as its value"))
                                .with_span(&bad.value),
                        );
                    }
                    continue;
                }
            };
            let key = path_key(meta.path());
            if self.known(&key, meta.path(), errors) {
                out.push(Entry { key, meta });
            }
        }
        out
    }

    /// Whether `key` is allowed and new; records why not.
    fn known(&mut self, key: &str, path: &syn::Path, errors: &mut Accumulator) -> bool {
        if !self.allowed.contains(&key) {
            let (attr, place) = (self.attr, self.place);
            let msg = if self.misplaced.0.contains(&key) {
                format!("`{key}` goes {} (`{attr}`{place} takes {})", self.misplaced.1, self.list())
            } else {
                match closest(key, self.allowed, self.synonyms) {
                    Some(s) => format!("unknown key `{key}` in `{attr}`{place}: did you mean `{s}`?"),
                    None => format!("unknown key `{key}` in `{attr}`{place}; the keys are {}", self.list()),
                }
            };
            errors.push(Error::custom(msg).with_span(path));
            return false;
        }
        if self.seen.iter().any(|k| k == key) {
            errors.push(
                Error::custom(format!(
                    "`{key}` is set more than once in `{}`{}: keep only one",
                    self.attr, self.place
                ))
                .with_span(path),
            );
            return false;
        }
        self.seen.push(key.to_owned());
        true
    }
}

/// The key a path names (`max_entries`, `crate`, or `a::b` as written).
fn path_key(path: &syn::Path) -> String {
    path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::")
}

/// The value of `key = value`; an error saying how to write it otherwise (`example` is a
/// complete entry, like `ttl = "30m"`).
pub(crate) fn value<'m>(entry: &Entry<'m>, example: &str) -> Result<&'m Expr> {
    match entry.meta {
        Meta::NameValue(nv) => Ok(ungroup(&nv.value)),
        Meta::Path(p) => {
            Err(Error::custom(format!("`{}` needs a value: write `{example}`", entry.key)).with_span(p))
        }
        Meta::List(l) => {
            Err(Error::custom(format!("write `{example}`, not `{}(...)`", entry.key)).with_span(l))
        }
    }
}

/// A flag like `secret`: bare, or `= true` / `= false`.
pub(crate) fn flag(entry: &Entry<'_>, attr: &str) -> Result<bool> {
    if let Meta::Path(_) = entry.meta {
        return Ok(true);
    }
    if let Meta::NameValue(nv) = entry.meta
        && let Expr::Lit(l) = ungroup(&nv.value)
        && let Lit::Bool(b) = &l.lit
    {
        return Ok(b.value);
    }
    Err(Error::custom(format!("`{0}` takes no value: write `#[{attr}({0})]`", entry.key))
        .with_span(entry.meta))
}

/// The string literal of an expression, if it is one.
pub(crate) fn lit_str(expr: &Expr) -> Option<&LitStr> {
    match ungroup(expr) {
        Expr::Lit(l) => match &l.lit {
            Lit::Str(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// Looks through the invisible groups `macro_rules!` wraps around fragments.
pub(crate) fn ungroup(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(g) => ungroup(&g.expr),
        e => e,
    }
}

/// A path given as `key = some::path` or `key = "some::path"`.
pub(crate) fn path(expr: &Expr, key: &str, example: &str) -> Result<syn::Path> {
    match ungroup(expr) {
        Expr::Path(p) if p.qself.is_none() => Ok(p.path.clone()),
        e => match lit_str(e) {
            Some(s) => s.parse::<syn::Path>().map_err(|_| {
                Error::custom(format!(
                    "`{key}` must name a path, like `{example}`; `{}` is not one",
                    s.value()
                ))
                .with_span(s)
            }),
            None => Err(Error::custom(format!("`{key}` must name a path: write `{example}`")).with_span(e)),
        },
    }
}

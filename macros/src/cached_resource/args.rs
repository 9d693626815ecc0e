//! Parses the arguments of `#[cached_resource(...)]`, recording every mistake.

use std::time::Duration;

use darling::ast::NestedMeta;
use darling::error::Accumulator;
use darling::util::SpannedValue;
use darling::{Error, Result};
use proc_macro2::TokenStream;

use crate::attr::keys::{self, Entry, Keys};
use crate::attr::refresh::Refresh;
use crate::attr::scope::Scope;
use crate::attr::{max_entries, ttl};
use crate::paths;

const KEYS: &[&str] =
    &["scope", "ttl", "max_entries", "on_release", "refresh", "max_stale", "shared", "version", "crate"];
const SYNONYMS: &[(&str, &str)] = &[
    ("expiry", "ttl"),
    ("expire", "ttl"),
    ("timeout", "ttl"),
    ("time_to_live", "ttl"),
    ("capacity", "max_entries"),
    ("max_size", "max_entries"),
    ("size", "max_entries"),
    ("on_evict", "on_release"),
    ("on_drop", "on_release"),
    ("on_close", "on_release"),
    ("release", "on_release"),
    ("krate", "crate"),
    ("refresh_mode", "refresh"),
    ("stale", "max_stale"),
    ("stale_window", "max_stale"),
    ("stale_for", "max_stale"),
    ("max_age", "max_stale"),
    ("share", "shared"),
    ("redis", "shared"),
    ("distributed", "shared"),
    ("cross_instance", "shared"),
    ("schema_version", "version"),
    ("revision", "version"),
];

/// `#[cached_resource(...)]`, as written (all optional).
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) scope: Option<SpannedValue<Scope>>,
    pub(crate) ttl: Option<SpannedValue<Duration>>,
    pub(crate) max_entries: Option<SpannedValue<u64>>,
    pub(crate) on_release: Option<syn::Path>,
    pub(crate) refresh: Option<SpannedValue<Refresh>>,
    pub(crate) max_stale: Option<SpannedValue<Duration>>,
    /// `shared = true`: a second tier in Redis (the span of the entry, when true).
    pub(crate) shared: Option<proc_macro2::Span>,
    /// `version = "2"`: the shared values' version (default: a digest of the function).
    pub(crate) version: Option<syn::LitStr>,
    pub(crate) krate: Option<syn::Path>,
}

impl Args {
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Accumulator) -> Args {
        let mut args = Args::default();
        let Some(items) = errors.handle(NestedMeta::parse_meta_list(tokens).map_err(Error::from)) else {
            return args;
        };
        let mut keys = Keys::new("#[cached_resource]", KEYS, SYNONYMS).misplaced(
            &["name", "health_check"],
            "on `#[connection]` of a provider, not on a cached function",
        );
        for entry in keys.entries(&items, errors) {
            errors.handle(args.set(&entry));
        }
        args
    }

    fn set(&mut self, entry: &Entry<'_>) -> Result<()> {
        match entry.key.as_str() {
            "scope" => self.scope = Some(Scope::parse(keys::value(entry, "scope = \"session\"")?)?),
            "ttl" => {
                self.ttl = Some(ttl::parse(
                    keys::value(entry, "ttl = \"5m\"")?,
                    "ttl",
                    "to keep values until they are evicted, invalidated or their session ends, leave `ttl` out",
                )?);
            }
            "max_entries" => {
                self.max_entries = Some(max_entries::parse(keys::value(entry, "max_entries = 100")?)?);
            }
            "on_release" => {
                let value = keys::value(entry, "on_release = close_report")?;
                self.on_release = Some(keys::path(value, "on_release", "on_release = close_report")?);
            }
            "refresh" => {
                self.refresh = Some(Refresh::parse(keys::value(entry, "refresh = \"background\"")?)?)
            }
            "max_stale" => {
                self.max_stale = Some(ttl::parse(
                    keys::value(entry, "max_stale = \"5m\"")?,
                    "max_stale",
                    "leave `max_stale` out for a window of one ttl",
                )?);
            }
            "shared" => {
                let on = keys::flag(entry, "cached_resource").map_err(|_| {
                    Error::custom("write `shared = true` (or `shared = false`)").with_span(entry.meta)
                })?;
                if on {
                    self.shared = Some(syn::spanned::Spanned::span(entry.meta));
                }
            }
            "version" => {
                let value = keys::value(entry, "version = \"2\"")?;
                match keys::lit_str(value) {
                    Some(lit) if !lit.value().is_empty() => self.version = Some(lit.clone()),
                    _ => {
                        return Err(Error::custom(
                            "write `version = \"2\"`: a non-empty string, changed when the shared values' \
                             meaning or layout changes",
                        )
                        .with_span(value));
                    }
                }
            }
            "crate" => {
                self.krate = Some(paths::parse_crate(keys::value(entry, "crate = \"::connscope\"")?)?);
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn scope(&self) -> Scope {
        self.scope.as_deref().copied().unwrap_or(Scope::Global)
    }
}

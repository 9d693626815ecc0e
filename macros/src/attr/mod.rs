//! Parsing shared by both macros: the key list, and the values that mean the same in
//! `#[connection(...)]` and `#[cached_resource(...)]` (`scope`, `ttl`, `max_entries`, `crate`).
//! Every parser reports a spanned, actionable error and never panics.

pub(crate) mod keys;
pub(crate) mod max_entries;
pub(crate) mod refresh;
pub(crate) mod scope;
mod suggest;
pub(crate) mod ttl;

pub(crate) use suggest::closest;

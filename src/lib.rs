//! # connscope
//!
//! Scoped, cached, self-healing connections and resources for Rust applications that serve many
//! users at once. Provider authors write a settings struct plus `connect` and `is_open`;
//! `#[derive(Connection)]` and `#[cached_resource]` generate the caching, the per-user scoping,
//! the eviction and the close hooks against a small runtime.
//!
//! See the README for a tour; the main types are [`Runtime`], [`Session`], [`Conn`],
//! [`Provider`] and [`Connection`].

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use connscope_macros::{Connection, cached_resource};
pub use connscope_runtime::*;

/// What generated code names. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use connscope_runtime::__private::*;
}

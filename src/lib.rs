//! Scoped, cached, self-healing connections and resources for Rust applications that serve many
//! users at once. The main types: [`Runtime`], [`Session`], [`Conn`], [`Provider`],
//! [`Connection`], [`Resource`] and [`cached_resource`]; SQL providers in `sql` and the axum
//! integration in `web` (features `sqlite`/`postgres`/`mysql` and `axum`).
//!
//! The rest of this page is the README. Its first example compiles as a doc test; the others
//! are fragments of an app (marked `ignore`), each shown whole in `examples/` and `tests/`.
#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use connscope_macros::{Connection, cached_resource};
pub use connscope_runtime::*;

/// What generated code names. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use connscope_runtime::__private::*;
}

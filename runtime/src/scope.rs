//! Scopes: where a cached value lives and who can see it.

use std::fmt;

/// Where a cached connection or resource lives.
///
/// * [`Scope::Global`]: one instance shared by every user of the [`Runtime`](crate::Runtime).
/// * [`Scope::Session`]: one instance per [`Session`](crate::Session), never visible to another
///   session and released when that session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// Shared by every user of the runtime.
    #[default]
    Global,
    /// One instance per user session.
    Session,
}

impl Scope {
    /// The lowercase name used in attributes: `"global"` or `"session"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Session => "session",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Type-level scope of a provider, so that scope rules can be checked at compile time.
///
/// Implemented by [`GlobalScope`] and [`SessionScope`]; `#[derive(Connection)]` picks one.
pub trait ScopeKind: Send + Sync + 'static {
    /// The run-time value of this scope.
    const SCOPE: Scope;
}

/// Type-level [`Scope::Global`].
#[derive(Clone, Copy, Debug)]
pub struct GlobalScope;

/// Type-level [`Scope::Session`].
#[derive(Clone, Copy, Debug)]
pub struct SessionScope;

impl ScopeKind for GlobalScope {
    const SCOPE: Scope = Scope::Global;
}

impl ScopeKind for SessionScope {
    const SCOPE: Scope = Scope::Session;
}

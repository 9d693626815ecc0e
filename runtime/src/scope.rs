//! Scopes: where a cached value lives and who can see it, and the identifier of a session
//! scope. A leaf: it imports nothing of the crate (the cache engine and errors name sessions
//! through [`SessionId`] without depending on sessions or the runtime).

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

/// A session's identifier, unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub(crate) u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session-{}", self.0)
    }
}

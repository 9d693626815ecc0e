//! Several instances through Redis (feature `redis`): a second tier of shared global results
//! (`shared = true`), single flight across instances, and invalidations, clears and session ends
//! broadcast to every instance within a bound. Connections never cross processes; values do.

mod bus;
mod codec;
mod flight;
#[cfg(feature = "axum")]
mod sessions;
mod settings;
mod tier;

pub use codec::SharedSpec;
pub use settings::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_INVALIDATION_BOUND, DEFAULT_LOCK_TTL, REDIS_URL_VAR, RedisSettings,
};
pub use tier::{RedisState, RedisStats};

pub(crate) use codec::{Keys, resource_id};
pub(crate) use flight::{Codec, load_with_age};
#[cfg(feature = "axum")]
pub(crate) use sessions::{Fetched, Record, SharedSessions, digest, unix_ms};
pub(crate) use tier::Tier;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) use tier::{GENERATIONS, Local};

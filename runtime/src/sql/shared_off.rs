//! Without feature `redis` there is no shared tier: every read is cached in this process only,
//! and invalidations stay in it. The same calls as `shared.rs`, doing nothing.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use super::cache::{Cached, ReadKey};
use super::error::SqlError;
use super::settings::SqlProvider;
use crate::conn::Conn;
use crate::runtime::Runtime;

/// Never built: no read goes to a shared tier.
pub(crate) enum Target {}

/// Never built: no rows are encoded.
#[derive(Clone, Copy)]
pub(crate) enum RowCodec {}

impl Target {
    pub(crate) fn of<P: SqlProvider>(_: &Conn<P>, _: Option<&Runtime>) -> Option<Target> {
        None
    }

    pub(crate) async fn load<P: SqlProvider, F>(
        &self,
        _: &Conn<P>,
        _: ReadKey<'_>,
        _: Duration,
        _: RowCodec,
        _: F,
    ) -> Result<(Cached, Option<Duration>), SqlError>
    where
        F: Future<Output = Result<Cached, SqlError>>,
    {
        match *self {}
    }
}

pub(crate) fn local_tags(tags: &[Arc<str>], _: bool) -> Cow<'_, [Arc<str>]> {
    Cow::Borrowed(tags)
}

pub(crate) async fn invalidate_tags_of<P: SqlProvider>(_: &Conn<P>, _: &[Arc<str>]) {}

pub(crate) fn invalidate_tag_in_background(_: &str) {}

pub(crate) fn clear_connection_in_background<P: SqlProvider>(_: &Conn<P>) {}

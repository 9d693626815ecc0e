//! The shared tier of the SQL query cache (feature `redis`, opt-in per read with
//! [`Query::shared`](super::Query::shared)): a result read by one instance is stored in Redis
//! and read by the others on their local miss, computed once across instances; tag
//! invalidations and `clear_query_cache` reach every instance.
//!
//! * **Keys.** A result lives at `{prefix}:sql:v:{digest}`, the digest (SHA-256) of the
//!   connection's stable identity (backend, provider type, URL without its password, user), the
//!   SQL text, the binds, the result shape, the row type's name and size, and the **Redis
//!   generations** of the connection and of each tag (`{prefix}:sql:g:c{connection}`,
//!   `{prefix}:sql:g:t{tag}`).
//! * **Invalidation.** `.invalidates(tag)` / [`invalidate`](super::invalidate) bump the tag's
//!   local counter, then `INCR` its Redis generation and publish the tag on the bus in one
//!   script: a reader that looks after the bump builds another key, and a load that read the
//!   data before the change stores its result under the old key, which nobody reads any more.
//!   Each instance bumps its local counter when the message arrives (the entries it holds with
//!   that tag, shared or not, become stale).
//! * **Outages.** Every shared read also carries a local "epoch" pseudo-tag, bumped when the bus
//!   cannot be confirmed within the invalidation bound (what the tier does for shared functions):
//!   an instance that may have missed a message stops serving its shared copies.
//! * Never shared: in-memory SQLite (each process has its own database), session connections and
//!   `per_session` reads (their results are one user's).

use std::any::type_name;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::backend::Backend;
use super::cache::{Cached, ReadKey, Shape};
use super::error::SqlError;
use super::redact::redact_url;
use super::settings::SqlProvider;
use super::value::SqlValue;
use crate::cache::BoxFuture;
use crate::conn::{Conn, Home};
use crate::redis::{Codec, Keys, Local, Tier};
use crate::runtime::Runtime;
use crate::session::Session;

/// The SQL query cache's name on the bus (a shared function's is `name:version`: no clash).
const RESOURCE: &str = crate::redis::GENERATIONS;

/// The local pseudo-tag of every shared read: bumped when a bus message may have been missed.
const EPOCH_TAG: &str = "\u{0}connscope:shared-sql";

/// The tags of a read's local generation: a shared read's also carry the epoch, bumped when
/// the tier may have missed a message.
pub(crate) fn local_tags(tags: &[Arc<str>], shared: bool) -> Cow<'_, [Arc<str>]> {
    static EPOCH: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(EPOCH_TAG));
    if !shared {
        return Cow::Borrowed(tags);
    }
    let mut out = tags.to_vec();
    out.push(Arc::clone(&EPOCH));
    Cow::Owned(out)
}

/// How a shared read's rows are encoded (postcard, as shared functions' values).
pub(crate) type RowCodec = Codec<Cached>;

/// The codec of a read of shape `shape` with rows `T`.
pub(crate) fn codec<T>(shape: Shape) -> RowCodec
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    match shape {
        Shape::All => Codec { encode: encode_as::<Vec<T>>, decode: decode_as::<Vec<T>> },
        Shape::One => Codec { encode: encode_as::<T>, decode: decode_as::<T> },
        Shape::Optional => Codec { encode: encode_optional::<T>, decode: decode_optional::<T> },
    }
}

fn encode_as<V: Serialize + 'static>(value: &Cached) -> Option<Vec<u8>> {
    postcard::to_stdvec(value.downcast_ref::<V>()?).ok()
}

fn decode_as<V: DeserializeOwned + Send + Sync + 'static>(bytes: &[u8]) -> Option<Cached> {
    Some(Arc::new(postcard::from_bytes::<V>(bytes).ok()?))
}

fn encode_optional<T: Serialize + 'static>(value: &Cached) -> Option<Vec<u8>> {
    postcard::to_stdvec(&value.downcast_ref::<Option<Arc<T>>>()?.as_deref()).ok()
}

fn decode_optional<T: DeserializeOwned + Send + Sync + 'static>(bytes: &[u8]) -> Option<Cached> {
    Some(Arc::new(postcard::from_bytes::<Option<T>>(bytes).ok()?.map(Arc::new)))
}

/// Where a shared read goes: the tier of the connection's runtime.
pub(crate) struct Target {
    tier: Arc<Tier>,
}

impl Target {
    /// The shared tier of `conn`'s runtime, if this read may be shared and Redis is configured.
    /// Cheap (the hit path asks it): what a miss needs is computed in [`Target::load`].
    pub(crate) fn of<P: SqlProvider>(conn: &Conn<P>, runtime: Option<&Runtime>) -> Option<Target> {
        if <P::Db as Backend>::is_in_memory(conn.provider().url()) {
            return None;
        }
        Some(Target { tier: Arc::clone(runtime?.tier()?) })
    }

    /// The result from Redis, or from `body` run once across instances (here when Redis is
    /// away or fails), with how long Redis still keeps it when it came from there (a local copy
    /// is kept no longer: a result is never served past its ttl from when it was computed).
    pub(crate) async fn load<P, F>(
        &self,
        conn: &Conn<P>,
        read: ReadKey<'_>,
        ttl: Duration,
        codec: RowCodec,
        body: F,
    ) -> Result<(Cached, Option<Duration>), SqlError>
    where
        P: SqlProvider,
        F: Future<Output = Result<Cached, SqlError>>,
    {
        let connection = stable_identity(conn.provider());
        enroll(&self.tier, &connection, super::cache::identity(conn.provider()));
        let tier = &self.tier;
        tier.connected().await;
        if tier.is_down() {
            return body.await.map(|v| (v, None));
        }
        let keys = Keys::new(&tier.settings.prefix, RESOURCE);
        let generation_keys: Vec<Vec<u8>> = std::iter::once(connection_key(&connection))
            .chain(read.tags.iter().map(|t| tag_key(t)))
            .map(|k| keys.generation(&k))
            .collect();
        let generations = tier
            .command(move |mut conn| async move {
                redis::cmd("MGET").arg(generation_keys).query_async::<Vec<Option<u64>>>(&mut conn).await
            })
            .await;
        let Some(generations) = generations else { return body.await.map(|v| (v, None)) };
        let key = digest(&connection, &read, &generations);
        crate::redis::load_with_age(Arc::clone(tier), keys, key, Some(ttl), codec, body).await
    }
}

/// The hex SHA-256 of everything that names one result.
fn digest(connection: &str, read: &ReadKey<'_>, generations: &[Option<u64>]) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(connection.as_bytes());
    field(read.sql.as_bytes());
    for bind in read.binds {
        bind_bytes(bind, &mut field);
    }
    field(&[read.shape as u8]);
    field(read.row.0.as_bytes());
    field(&(read.row.1 as u64).to_le_bytes());
    for g in generations {
        field(&g.unwrap_or(0).to_le_bytes());
    }
    hex(&h.finalize())
}

/// A bind's type, nullness and value, each as its own field.
fn bind_bytes(bind: &SqlValue, field: &mut impl FnMut(&[u8])) {
    let (kind, value): (u8, Option<Vec<u8>>) = match bind {
        SqlValue::Bool(v) => (1, v.map(|v| vec![u8::from(v)])),
        SqlValue::I16(v) => (2, v.map(|v| v.to_le_bytes().to_vec())),
        SqlValue::I32(v) => (3, v.map(|v| v.to_le_bytes().to_vec())),
        SqlValue::I64(v) => (4, v.map(|v| v.to_le_bytes().to_vec())),
        SqlValue::F32(v) => (5, v.map(|v| v.to_bits().to_le_bytes().to_vec())),
        SqlValue::F64(v) => (6, v.map(|v| v.to_bits().to_le_bytes().to_vec())),
        SqlValue::Text(v) => (7, v.as_ref().map(|v| v.as_bytes().to_vec())),
        SqlValue::Bytes(v) => (8, v.clone()),
    };
    field(&[kind, u8::from(value.is_some())]);
    field(value.as_deref().unwrap_or_default());
}

fn hex(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect()
}

/// The connection's identity on every instance: backend, provider type, URL without its
/// password, user (a digest: the URL never reaches Redis).
fn stable_identity<P: SqlProvider>(p: &P) -> String {
    let mut h = Sha256::new();
    for part in [<P::Db as Backend>::KIND, type_name::<P>(), &redact_url(p.url()), p.user().unwrap_or("")] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    String::from_utf8(hex(&h.finalize())).unwrap_or_default()
}

/// The bus key of a tag (`t{tag}`) or of a connection (`c{identity}`); also the suffix of its
/// Redis generation key.
fn tag_key(tag: &str) -> Vec<u8> {
    [b"t", tag.as_bytes()].concat()
}

fn connection_key(connection: &str) -> Vec<u8> {
    [b"c", connection.as_bytes()].concat()
}

/// What this process knows of the shared tier: the tiers that served shared reads (a tag
/// invalidated without a connection at hand is broadcast on them), and the local identities
/// of each stable connection identity (what a connection clear from elsewhere bumps).
#[derive(Default)]
struct Known {
    tiers: Vec<Weak<Tier>>,
    connections: HashMap<String, Vec<u64>>,
}

/// Local identities kept per stable identity (a rotated password makes a new local one).
const IDENTITIES_KEPT: usize = 16;

static KNOWN: LazyLock<Mutex<Known>> = LazyLock::new(Default::default);

fn known() -> std::sync::MutexGuard<'static, Known> {
    KNOWN.lock().unwrap_or_else(|p| p.into_inner())
}

fn enroll(tier: &Arc<Tier>, connection: &str, identity: u64) {
    tier.register_local(RESOURCE, || Arc::new(SqlLocal));
    let mut known = known();
    if !known.tiers.iter().any(|t| std::ptr::eq(t.as_ptr(), Arc::as_ptr(tier))) {
        known.tiers.retain(|t| t.strong_count() > 0);
        known.tiers.push(Arc::downgrade(tier));
    }
    let ids = known.connections.entry(connection.to_owned()).or_default();
    if !ids.contains(&identity) {
        if ids.len() >= IDENTITIES_KEPT {
            ids.remove(0);
        }
        ids.push(identity);
    }
}

/// What the bus's SQL messages do here.
struct SqlLocal;

impl Local for SqlLocal {
    fn invalidate(&self, key: &[u8]) -> BoxFuture<'static, ()> {
        match key.split_first() {
            Some((b't', tag)) => super::generations::invalidate(&String::from_utf8_lossy(tag)),
            Some((b'c', connection)) => {
                let ids = known().connections.get(&*String::from_utf8_lossy(connection)).cloned();
                for id in ids.unwrap_or_default() {
                    super::generations::clear_connection(id);
                }
            }
            _ => {}
        }
        Box::pin(async {})
    }

    fn clear(&self) -> BoxFuture<'static, ()> {
        super::generations::invalidate(EPOCH_TAG);
        Box::pin(async {})
    }
}

/// The tiers an invalidation must reach: the runtime's (if Redis is configured), and every
/// tier that served shared reads in this process.
fn tiers(runtime: Option<&Runtime>) -> Vec<Arc<Tier>> {
    let mut out: Vec<Arc<Tier>> = runtime.and_then(|rt| rt.tier()).into_iter().cloned().collect();
    for tier in known().tiers.iter().filter_map(Weak::upgrade) {
        if !out.iter().any(|t| Arc::ptr_eq(t, &tier)) {
            out.push(tier);
        }
    }
    out
}

/// [`invalidate_tags`] for a write on `conn`: through its runtime's tier too.
pub(crate) async fn invalidate_tags_of<P: SqlProvider>(conn: &Conn<P>, tags: &[Arc<str>]) {
    if !tags.is_empty() {
        invalidate_tags(home_runtime(conn).as_ref(), tags).await;
    }
}

/// Tells every instance that `tags` changed (their Redis generations bumped, the message
/// published; kept for later when Redis is away). The local counters were bumped by the caller.
async fn invalidate_tags(runtime: Option<&Runtime>, tags: &[Arc<str>]) {
    if tags.is_empty() {
        return;
    }
    let tiers = tiers(runtime);
    for tier in &tiers {
        let keys = Keys::new(&tier.settings.prefix, RESOURCE);
        for tag in tags {
            tier.invalidate(RESOURCE, &keys, tag_key(tag)).await;
        }
    }
}

/// [`invalidate_tags`] from synchronous code: runs on connscope's own thread. Reaches the tiers
/// that served shared reads, and the current session's runtime's (never builds the default
/// runtime just for this).
pub(crate) fn invalidate_tag_in_background(tag: &str) {
    let tag: Arc<str> = Arc::from(tag);
    let runtime = Session::with_current(|s| s.map(|s| s.runtime().clone()));
    if runtime.is_none() && known().tiers.is_empty() {
        return;
    }
    drop(crate::cache::own_runtime().spawn(async move { invalidate_tags(runtime.as_ref(), &[tag]).await }));
}

/// Tells every instance to drop the cached reads of `conn`'s connection (in the background).
pub(crate) fn clear_connection_in_background<P: SqlProvider>(conn: &Conn<P>) {
    let Some(runtime) = home_runtime(conn) else { return };
    let connection = stable_identity(conn.provider());
    let tiers = tiers(Some(&runtime));
    drop(crate::cache::own_runtime().spawn(async move {
        for tier in tiers {
            let keys = Keys::new(&tier.settings.prefix, RESOURCE);
            tier.invalidate(RESOURCE, &keys, connection_key(&connection)).await;
        }
    }));
}

/// The runtime `conn` lives in (its session's, for a session connection).
fn home_runtime<P: SqlProvider>(conn: &Conn<P>) -> Option<Runtime> {
    match conn.home() {
        Some(Home::Global(weak)) => weak.upgrade().map(|shared| Runtime { shared }),
        Some(Home::Session(weak)) => weak.upgrade().map(|inner| Session { inner }.runtime().clone()),
        None => Some(Runtime::current()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<'a>(sql: &'a str, binds: &'a [SqlValue], tags: &'a [Arc<str>]) -> ReadKey<'a> {
        ReadKey { sql, binds, shape: Shape::All, tags, row: ("app::Row", 16) }
    }

    #[test]
    fn the_digest_names_every_part_of_a_read() {
        let base = digest("c", &read("select ?", &[SqlValue::from(1i64)], &[]), &[Some(1)]);
        assert_eq!(base.len(), 64);
        assert_eq!(base, digest("c", &read("select ?", &[SqlValue::from(1i64)], &[]), &[Some(1)]));
        let others = [
            digest("d", &read("select ?", &[SqlValue::from(1i64)], &[]), &[Some(1)]),
            digest("c", &read("select ? ", &[SqlValue::from(1i64)], &[]), &[Some(1)]),
            digest("c", &read("select ?", &[SqlValue::from(2i64)], &[]), &[Some(1)]),
            digest("c", &read("select ?", &[SqlValue::from(1i32)], &[]), &[Some(1)]),
            digest("c", &read("select ?", &[SqlValue::from(None::<i64>)], &[]), &[Some(1)]),
            digest("c", &read("select ?", &[SqlValue::from(1i64)], &[]), &[Some(2)]),
            digest("c", &read("select ?", &[SqlValue::from(1i64)], &[]), &[None]),
        ];
        for other in others {
            assert_ne!(base, other);
        }
        let mut one = read("select ?", &[], &[]);
        one.shape = Shape::One;
        assert_ne!(digest("c", &one, &[]), digest("c", &read("select ?", &[], &[]), &[]));
        let mut renamed = read("select ?", &[], &[]);
        renamed.row = ("app::Other", 16);
        assert_ne!(digest("c", &renamed, &[]), digest("c", &read("select ?", &[], &[]), &[]));
        // Text and bytes with the same content are different binds; so are "ab" + "c" and "a" + "bc".
        let t = [SqlValue::from("ab"), SqlValue::from("c")];
        let u = [SqlValue::from("a"), SqlValue::from("bc")];
        assert_ne!(digest("c", &read("s", &t, &[]), &[]), digest("c", &read("s", &u, &[]), &[]));
        let b = [SqlValue::from(b"ab".to_vec()), SqlValue::from("c")];
        assert_ne!(digest("c", &read("s", &t, &[]), &[]), digest("c", &read("s", &b, &[]), &[]));
    }

    #[test]
    fn rows_round_trip_in_every_shape() {
        let rows: Cached = Arc::new(vec![(1u32, "a".to_owned())]);
        let c = codec::<(u32, String)>(Shape::All);
        let back = (c.decode)(&(c.encode)(&rows).unwrap()).unwrap();
        assert_eq!(back.downcast_ref::<Vec<(u32, String)>>().unwrap(), &vec![(1, "a".to_owned())]);
        let some: Cached = Arc::new(Some(Arc::new(5u8)));
        let c = codec::<u8>(Shape::Optional);
        let back = (c.decode)(&(c.encode)(&some).unwrap()).unwrap();
        assert_eq!(back.downcast_ref::<Option<Arc<u8>>>().unwrap().as_deref(), Some(&5));
        let none: Cached = Arc::new(None::<Arc<u8>>);
        let back = (c.decode)(&(c.encode)(&none).unwrap()).unwrap();
        assert!(back.downcast_ref::<Option<Arc<u8>>>().unwrap().is_none());
        let c = codec::<u8>(Shape::One);
        assert!((c.encode)(&rows).is_none(), "another type is not encoded as this one");
        assert!((c.decode)(&[]).is_none(), "bytes that are not a row are a miss");
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn the_stable_identity_hides_the_password_and_ignores_it() {
        type Db = super::super::SqliteDb;
        let a = stable_identity(&Db::new("postgres://u:secret-one@h/db"));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("secret"));
        assert_eq!(
            a,
            stable_identity(&Db::new("postgres://u:secret-two@h/db")),
            "a rotated password: same data"
        );
        assert_ne!(a, stable_identity(&Db::new("postgres://u:secret-one@h/other")));
        assert_ne!(a, stable_identity(&Db::new("postgres://v:secret-one@h/db")));
    }
}

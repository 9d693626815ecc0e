//! A local miss of a shared value: read it from Redis, or compute it once for every instance.
//! The instance that takes the key's lock (`SET NX PX`, a random token) runs the body, renews
//! the lock while it runs, and stores the value only if it still holds the lock (an
//! invalidation deletes the lock, so a value computed from data read before it is not stored).
//! The others wait for the "ready" notice on the bus, polling as a fallback, and take over when
//! the lock expires (its holder died). Any Redis failure: the caller's own body runs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::codec::{Keys, frame, unframe};
use super::tier::{Tier, bump};
use crate::cache::own_runtime;

/// How often a waiting instance looks again when no notice came.
const POLL: Duration = Duration::from_millis(100);

/// Stores the value if the lock is still ours, drops the lock and tells the waiters.
/// KEYS: value, lock, channel. ARGV: token, bytes, ttl in ms (0: none).
const STORE: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[3], 'R' .. KEYS[1])
return 1";

/// Drops the lock if it is still ours and tells the waiters. KEYS: value, lock, channel.
/// ARGV: token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[3], 'R' .. KEYS[1])
return 1";

/// Extends the lock if it is still ours. KEYS: lock. ARGV: token, ttl in ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])";

/// How a shared value is encoded.
pub(crate) struct Codec<V> {
    pub(crate) encode: fn(&V) -> Option<Vec<u8>>,
    pub(crate) decode: fn(&[u8]) -> Option<V>,
}

impl<V> Clone for Codec<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for Codec<V> {}

/// The value of `key` from Redis, or from `body` run once across instances (`body` runs here
/// when Redis fails or is away), with how long Redis still keeps a value read from there
/// (`None`: computed here, or kept without expiry): a local copy should not outlive the stored
/// one.
pub(crate) async fn load_with_age<V, E, F>(
    tier: Arc<Tier>,
    keys: Keys,
    key: Vec<u8>,
    ttl: Option<Duration>,
    codec: Codec<V>,
    body: F,
) -> Result<(V, Option<Duration>), E>
where
    V: Send + 'static,
    F: Future<Output = Result<V, E>>,
{
    let computed = |r: Result<V, E>| r.map(|v| (v, None));
    tier.connected().await;
    if tier.is_down() {
        return computed(body.await);
    }
    let value_key = keys.value(&key);
    let lock_key = keys.lock(&key);
    let mut waited = false;
    loop {
        let ready = tier.waiter(&value_key);
        let notified = ready.notified();
        let found = {
            let value_key = value_key.clone();
            tier.command(move |mut conn| async move {
                redis::pipe()
                    .cmd("GET")
                    .arg(&value_key)
                    .cmd("PTTL")
                    .arg(&value_key)
                    .query_async::<(Option<Vec<u8>>, i64)>(&mut conn)
                    .await
            })
            .await
        };
        match found {
            None => return computed(body.await),
            Some((Some(bytes), pttl)) => match unframe(&bytes).and_then(codec.decode) {
                Some(v) => {
                    bump(&tier.counters.remote_hits);
                    let remaining = u64::try_from(pttl).ok().filter(|ms| *ms > 0).map(Duration::from_millis);
                    return Ok((v, remaining));
                }
                // Written by another encoding: computed again and overwritten.
                None => bump(&tier.counters.decode_failures),
            },
            Some((None, _)) => {}
        }
        let token = token();
        let taken = {
            let (lock_key, token, ms) = (lock_key.clone(), token.clone(), millis(tier.settings.lock_ttl));
            tier.command(move |mut conn| async move {
                redis::cmd("SET")
                    .arg(lock_key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async::<Option<String>>(&mut conn)
                    .await
            })
            .await
        };
        match taken {
            None => return computed(body.await),
            Some(Some(_)) => {
                if waited {
                    bump(&tier.counters.takeovers);
                }
                return computed(hold(&tier, value_key, lock_key, token, ttl, &codec, body).await);
            }
            Some(None) => {
                if !waited {
                    bump(&tier.counters.waited);
                }
                waited = true;
                let _ = tokio::time::timeout(POLL, notified).await;
                if tier.is_down() {
                    return computed(body.await);
                }
            }
        }
    }
}

/// Runs the body holding the lock (renewed meanwhile), stores an `Ok` value, releases the lock.
/// Dropped halfway (the caller went away), the lock is released at once by its guard.
async fn hold<V, E, F>(
    tier: &Arc<Tier>,
    value_key: Vec<u8>,
    lock_key: Vec<u8>,
    token: String,
    ttl: Option<Duration>,
    codec: &Codec<V>,
    body: F,
) -> Result<V, E>
where
    V: Send + 'static,
    F: Future<Output = Result<V, E>>,
{
    bump(&tier.counters.computed);
    let mut guard = Held { tier: Arc::clone(tier), value_key, lock_key, token, renew: None, done: false };
    guard.renew =
        Some(own_runtime().spawn(renew(Arc::clone(tier), guard.lock_key.clone(), guard.token.clone())));
    let out = body.await;
    if let Ok(v) = &out {
        if let Some(bytes) = (codec.encode)(v).map(frame) {
            let (value, lock, channel, token) =
                (guard.value_key.clone(), guard.lock_key.clone(), tier.channel.clone(), guard.token.clone());
            let ms = ttl.map_or(0, millis);
            let stored = tier
                .command(move |mut conn| async move {
                    redis::Script::new(STORE)
                        .key(value)
                        .key(lock)
                        .key(channel)
                        .arg(token)
                        .arg(bytes)
                        .arg(ms)
                        .invoke_async::<i64>(&mut conn)
                        .await
                })
                .await;
            match stored {
                Some(1) => {
                    bump(&tier.counters.stored);
                    guard.done = true;
                }
                Some(_) => bump(&tier.counters.store_refused),
                None => {}
            }
        } else {
            tracing::warn!(
                "connscope: a shared value could not be encoded; it is cached on this instance only"
            );
        }
    }
    drop(guard);
    out
}

/// The lock of a load in progress: renewed by a task, released on drop unless stored.
struct Held {
    tier: Arc<Tier>,
    value_key: Vec<u8>,
    lock_key: Vec<u8>,
    token: String,
    renew: Option<tokio::task::JoinHandle<()>>,
    done: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(renew) = self.renew.take() {
            renew.abort();
        }
        if self.done {
            return;
        }
        let tier = Arc::clone(&self.tier);
        let (value, lock, channel, token) =
            (self.value_key.clone(), self.lock_key.clone(), tier.channel.clone(), self.token.clone());
        drop(own_runtime().spawn(async move {
            tier.command(move |mut conn| async move {
                redis::Script::new(RELEASE)
                    .key(value)
                    .key(lock)
                    .key(channel)
                    .arg(token)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await
        }));
    }
}

async fn renew(tier: Arc<Tier>, lock_key: Vec<u8>, token: String) {
    let ttl = tier.settings.lock_ttl;
    loop {
        tokio::time::sleep(ttl / 3).await;
        let (lock_key, token) = (lock_key.clone(), token.clone());
        let kept = tier
            .command(move |mut conn| async move {
                redis::Script::new(RENEW)
                    .key(lock_key)
                    .arg(token)
                    .arg(millis(ttl))
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await;
        if kept == Some(0) {
            return;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A random lock token: only its holder can store or release.
fn token() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

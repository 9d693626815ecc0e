//! Session records of the web layer in Redis, so that a browser's session cookie resolves on
//! every instance: `{prefix}:session:{digest}`, where the digest is SHA-256 of the cookie id
//! (a reader of Redis learns nothing that lets it present a cookie), holding what another
//! instance needs to take the session over: when it was created (for the absolute lifetime),
//! its CSRF secret, and the names of the connections it logged in to (which cannot cross
//! processes: the other instance asks for that login again).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::tier::Tier;

/// What another instance needs to resolve a session cookie.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Milliseconds since the Unix epoch of the first login.
    pub(crate) created_unix_ms: u64,
    /// The session's CSRF secret (the binding of its forms' tokens).
    pub(crate) secret: String,
    /// Connections the browser logged in to, on some instance.
    pub(crate) logins: Vec<String>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("created_unix_ms", &self.created_unix_ms)
            .field("secret", &"<redacted>")
            .field("logins", &self.logins)
            .finish()
    }
}

/// Version tag of the encoding: a record of another encoding is treated as missing.
const VERSION: u8 = 1;

impl Record {
    fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&(VERSION, self.created_unix_ms, &self.secret, &self.logins)).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Record> {
        let (version, created_unix_ms, secret, logins): (u8, u64, String, Vec<String>) =
            postcard::from_bytes(bytes).ok()?;
        (version == VERSION).then_some(Record { created_unix_ms, secret, logins })
    }
}

/// What a look-up found.
#[derive(Debug)]
pub(crate) enum Fetched {
    Found(Record),
    /// No record: the session ended, expired, or never was.
    Missing,
    /// Redis did not answer (down, timeout): nothing is known.
    Unavailable,
}

/// The web layer's handle on the tier.
#[derive(Clone)]
pub(crate) struct SharedSessions {
    tier: Arc<Tier>,
}

/// `{prefix}:session-csrf-key`: the browser CSRF key of the app's instances.
pub(crate) fn csrf_key(prefix: &str) -> String {
    format!("{prefix}:session-csrf-key")
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The lower-case hex SHA-256 of a cookie id (domain-separated): the only form in which a
/// cookie id leaves the process.
pub(crate) fn digest(cookie_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"connscope-session\0");
    h.update(cookie_id.as_bytes());
    crate::web::hex(&h.finalize())
}

fn ms(d: Duration) -> u64 {
    (d.as_millis().min(u128::from(u64::MAX)) as u64).max(1)
}

impl SharedSessions {
    pub(crate) fn new(tier: Arc<Tier>) -> Self {
        SharedSessions { tier }
    }

    pub(crate) fn tier(&self) -> &Arc<Tier> {
        &self.tier
    }

    fn key(&self, digest: &str) -> String {
        format!("{}:session:{digest}", self.tier.settings.prefix)
    }

    /// Writes the record with expiry `ttl` (replacing one of the same digest). False if Redis
    /// did not take it, or is away (nothing waits on it then).
    pub(crate) async fn store(&self, digest: &str, record: &Record, ttl: Duration) -> bool {
        if self.tier.is_down() {
            return false;
        }
        let (key, value, ttl) = (self.key(digest), record.encode(), ms(ttl));
        self.tier
            .command(move |mut conn| async move {
                redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl).query_async::<()>(&mut conn).await
            })
            .await
            .is_some()
    }

    /// Writes the record unless one exists (a record that was never stored because Redis was
    /// away at login). `Some(true)`: written or already there.
    pub(crate) async fn store_if_missing(
        &self,
        digest: &str,
        record: &Record,
        ttl: Duration,
    ) -> Option<bool> {
        let (key, value, ttl) = (self.key(digest), record.encode(), ms(ttl));
        self.tier
            .command(move |mut conn| async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut conn)
                    .await?;
                Ok(set.is_some())
            })
            .await
    }

    /// Extends the record's expiry to `ttl` from now. `Some(false)`: there is no record (the
    /// session ended elsewhere, or its record expired).
    pub(crate) async fn refresh(&self, digest: &str, ttl: Duration) -> Option<bool> {
        let (key, ttl) = (self.key(digest), ms(ttl));
        self.tier
            .command(move |mut conn| async move {
                redis::cmd("PEXPIRE").arg(key).arg(ttl).query_async::<i64>(&mut conn).await.map(|n| n == 1)
            })
            .await
    }

    /// Looks the record up (one GET, within the command timeout).
    pub(crate) async fn fetch(&self, digest: &str) -> Fetched {
        if self.tier.is_down() {
            return Fetched::Unavailable;
        }
        let key = self.key(digest);
        let got = self
            .tier
            .command(move |mut conn| async move {
                redis::cmd("GET").arg(key).query_async::<Option<Vec<u8>>>(&mut conn).await
            })
            .await;
        match got {
            None => Fetched::Unavailable,
            Some(None) => Fetched::Missing,
            Some(Some(bytes)) => Record::decode(&bytes).map_or(Fetched::Missing, Fetched::Found),
        }
    }

    /// Deletes the record and ends the session on every other instance (kept for later while
    /// Redis is away).
    pub(crate) async fn end_everywhere(&self, digest: &str) -> bool {
        self.tier.end_session_everywhere(digest).await
    }

    /// The browser CSRF key shared by every instance: `candidate` if none was stored yet, else
    /// the stored one. `None`: Redis did not answer.
    pub(crate) async fn shared_key(&self, candidate: [u8; 32]) -> Option<[u8; 32]> {
        let key = csrf_key(&self.tier.settings.prefix);
        let stored = self
            .tier
            .command(move |mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&candidate[..])
                    .arg("NX")
                    .query_async::<()>(&mut conn)
                    .await?;
                redis::cmd("GET").arg(&key).query_async::<Option<Vec<u8>>>(&mut conn).await
            })
            .await??;
        stored.try_into().ok()
    }

    /// How many outages the tier has had: a change means bus messages may have been missed.
    pub(crate) fn outages(&self) -> u64 {
        self.tier.counters.outages.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_foreign_bytes_are_missing() {
        let r = Record { created_unix_ms: 42, secret: "s".repeat(64), logins: vec!["warehouse".into()] };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        assert_eq!(Record::decode(b""), None);
        assert_eq!(Record::decode(&[2, 0, 0, 0]), None, "another version");
    }

    #[test]
    fn a_record_never_prints_its_secret() {
        let r = Record { created_unix_ms: 1, secret: "hush-hush".into(), logins: vec![] };
        assert!(!format!("{r:?} {:?}", Fetched::Found(r.clone())).contains("hush"));
    }

    #[test]
    fn the_digest_is_hex_sha256_and_not_the_id() {
        let id = "ab".repeat(32);
        let d = digest(&id);
        assert_eq!(d.len(), 64);
        assert_ne!(d, id);
        assert_eq!(d, digest(&id));
        assert_ne!(d, digest(&"ac".repeat(32)));
    }
}

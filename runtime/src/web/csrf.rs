//! CSRF tokens that need no server-side state: `<expiry>.<HMAC-SHA256(key, binding, expiry)>`,
//! with a random key per [`WebSessions`](super::WebSessions). A token is bound to what the
//! browser holds: before login, a random pre-session cookie (a signed double-submit cookie);
//! after login, a secret of the session, replaced on every login. It expires after the token
//! lifetime (one hour by default), measured on Tokio's clock from the wall-clock time the signer
//! was made. A session's tokens are keyed by
//! its secret, so that they check on every instance sharing the session.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::time::Instant;

/// What a token is bound to.
#[derive(Clone, Copy)]
pub(crate) enum Binding<'a> {
    /// A browser without a session: the value of its pre-session cookie.
    Browser(&'a str),
    /// A live session: its current secret (the key) and cookie id. A reader of the session
    /// records in Redis, which hold the secret but never the cookie id, cannot forge a token.
    Session { secret: &'a str, id: &'a str },
}

/// Issues and checks tokens with one key.
pub(crate) struct Signer {
    key: [u8; 32],
    /// The browser key every instance of the app uses (sessions across instances), once known:
    /// tokens are issued with it, and checked against it and the own key.
    shared_key: std::sync::OnceLock<[u8; 32]>,
    epoch: Instant,
    /// Unix ms at `epoch`: expiries are wall-clock times (comparable across instances), that
    /// advance with Tokio's clock (paused in tests).
    epoch_unix_ms: u64,
    lifetime: Duration,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer with a fresh random key.
    pub(crate) fn new(lifetime: Duration) -> Signer {
        let mut key = [0u8; 32];
        super::sessions::fill_random(&mut key);
        let epoch_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64);
        Signer { key, shared_key: std::sync::OnceLock::new(), epoch: Instant::now(), epoch_unix_ms, lifetime }
    }

    /// Uses `key` (the one every instance of the app shares) for browser bindings from now on.
    /// Tokens issued with the own key still check.
    #[cfg(feature = "redis")]
    pub(crate) fn share_key(&self, key: [u8; 32]) {
        let _ = self.shared_key.set(key);
    }

    /// A token for `binding`, valid for the token lifetime from now.
    pub(crate) fn issue(&self, binding: Binding<'_>) -> String {
        let expiry = self.now_ms().saturating_add(self.lifetime.as_millis().min(u64::MAX as u128) as u64);
        let key = self.shared_key.get().unwrap_or(&self.key);
        let tag = self.mac(key, binding, expiry).map(|m| hex(&m.finalize().into_bytes())).unwrap_or_default();
        format!("{expiry:x}.{tag}")
    }

    /// Whether `token` was issued by this signer for `binding` and has not expired.
    pub(crate) fn check(&self, binding: Binding<'_>, token: &str) -> bool {
        let Some((expiry, tag)) = token.split_once('.') else { return false };
        let (Ok(expiry), Some(tag)) = (u64::from_str_radix(expiry, 16), unhex(tag)) else { return false };
        if self.now_ms() > expiry {
            return false;
        }
        // `verify_slice` compares in constant time.
        let checks =
            |key: &[u8; 32]| self.mac(key, binding, expiry).is_some_and(|m| m.verify_slice(&tag).is_ok());
        self.shared_key.get().is_some_and(checks) || checks(&self.key)
    }

    /// The MAC of `binding` with browser key `browser_key`. A session's tokens are keyed by its
    /// secret instead (256 random bits, server-side): they check on every instance that shares
    /// the session (sessions across instances), and nowhere else.
    fn mac(&self, browser_key: &[u8; 32], binding: Binding<'_>, expiry: u64) -> Option<Hmac<Sha256>> {
        let key = match binding {
            Binding::Browser(_) => &browser_key[..],
            Binding::Session { secret, .. } => secret.as_bytes(),
        };
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
        let (kind, value) = match binding {
            Binding::Browser(v) => (b"browser\0", v),
            Binding::Session { id, .. } => (b"session\0", id),
        };
        mac.update(kind);
        mac.update(&(value.len() as u64).to_be_bytes());
        mac.update(value.as_bytes());
        mac.update(&expiry.to_be_bytes());
        Some(mac)
    }

    fn now_ms(&self) -> u64 {
        let elapsed =
            Instant::now().saturating_duration_since(self.epoch).as_millis().min(u64::MAX as u128) as u64;
        self.epoch_unix_ms.saturating_add(elapsed)
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    s.as_bytes().chunks(2).map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_token_checks_only_for_its_binding_and_until_it_expires() {
        let signer = Signer::new(Duration::from_secs(60));
        let token = signer.issue(Binding::Browser("n1"));
        assert!(signer.check(Binding::Browser("n1"), &token));
        assert!(!signer.check(Binding::Browser("n2"), &token), "another browser");
        assert!(
            !signer.check(Binding::Session { secret: "n1", id: "n1" }, &token),
            "a session with the same text"
        );
        let session = signer.issue(Binding::Session { secret: "s1", id: "i1" });
        assert!(signer.check(Binding::Session { secret: "s1", id: "i1" }, &session));
        let elsewhere = Signer::new(Duration::from_secs(60));
        assert!(
            elsewhere.check(Binding::Session { secret: "s1", id: "i1" }, &session),
            "any instance of the session"
        );
        assert!(!signer.check(Binding::Session { secret: "s1", id: "i2" }, &session), "another cookie id");
        assert!(!signer.check(Binding::Session { secret: "s2", id: "i1" }, &session), "another secret");
        assert!(!Signer::new(Duration::from_secs(60)).check(Binding::Browser("n1"), &token), "another key");
        let (expiry, tag) = token.split_once('.').unwrap();
        let later = format!("{:x}.{tag}", u64::from_str_radix(expiry, 16).unwrap() + 1);
        assert!(!signer.check(Binding::Browser("n1"), &later), "the expiry is signed");
        for bad in ["", ".", "zz.zz", "1.abc", "ffffffffffffffffffff.00", "1.é0"] {
            assert!(!signer.check(Binding::Browser("n1"), bad), "{bad:?}");
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(signer.check(Binding::Browser("n1"), &token), "valid for its whole lifetime");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!signer.check(Binding::Browser("n1"), &token), "expired");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 1, 0xab, 0xff]), "0001abff");
        assert_eq!(unhex("0001abff"), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(unhex("0g"), None);
    }
}

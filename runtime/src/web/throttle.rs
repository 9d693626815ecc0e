//! Login throttling: failed logins per account (the non-secret fields typed, e.g. the user name)
//! and per client (the peer's address, or a key the app chooses) back off exponentially. An
//! attempt that is refused never reaches the provider's `connect`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use tokio::time::Instant;

use super::sessions::WebSession;

type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// How failed logins back off; set with
/// [`WebSessions::login_throttle`](super::WebSessions::login_throttle).
///
/// An account (the login form's non-secret fields, such as the user name, compared without
/// case) may fail [`max_failures`](Self::max_failures) times in a row (default 5), a client
/// [`max_failures_per_client`](Self::max_failures_per_client) times (default 20). Past that,
/// each attempt waits [`first_delay`](Self::first_delay) (default 1 s) after the last failure,
/// doubling with every further failure up to [`max_delay`](Self::max_delay) (default 15 min);
/// an attempt within the wait is refused (HTTP 429, `Retry-After`) without connecting. A
/// successful login clears its account's failures; a client's failures are forgotten
/// [`forget_after`](Self::forget_after) (default 15 min) after its last one. At most
/// [`max_records`](Self::max_records) accounts and as many clients (default 10 000 each) are
/// remembered; past that the oldest record goes first.
///
/// ```
/// use std::time::Duration;
/// use connscope::web::LoginThrottle;
///
/// // Behind a reverse proxy that sets `X-Real-IP` (and strips it from what clients send):
/// let throttle = LoginThrottle::default()
///     .max_failures(3)
///     .first_delay(Duration::from_secs(2))
///     .client_key(|parts| parts.headers.get("x-real-ip")?.to_str().ok().map(str::to_owned));
/// ```
#[derive(Clone)]
#[must_use]
pub struct LoginThrottle {
    max_failures: u32,
    max_failures_per_client: u32,
    first_delay: Duration,
    max_delay: Duration,
    forget_after: Duration,
    max_records: usize,
    client_key: KeyFn,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            max_failures: 5,
            max_failures_per_client: 20,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(15 * 60),
            max_records: 10_000,
            client_key: Arc::new(peer_address),
        }
    }
}

impl fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("max_failures", &self.max_failures)
            .field("max_failures_per_client", &self.max_failures_per_client)
            .field("first_delay", &self.first_delay)
            .field("max_delay", &self.max_delay)
            .field("forget_after", &self.forget_after)
            .field("max_records", &self.max_records)
            .finish_non_exhaustive()
    }
}

impl LoginThrottle {
    /// No throttling at all (every attempt connects).
    pub fn off() -> Self {
        LoginThrottle { max_failures: u32::MAX, max_failures_per_client: u32::MAX, ..Self::default() }
    }

    /// Failures in a row an account may have before attempts wait (default 5).
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = n;
        self
    }

    /// Failures in a row a client may have, whatever the accounts, before its attempts wait
    /// (default 20).
    pub fn max_failures_per_client(mut self, n: u32) -> Self {
        self.max_failures_per_client = n;
        self
    }

    /// The first wait; each further failure doubles it (default 1 s).
    pub fn first_delay(mut self, delay: Duration) -> Self {
        self.first_delay = delay;
        self
    }

    /// The longest wait (default 15 minutes).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How long after its last failure a record is forgotten (default 15 minutes; never before
    /// its wait is over).
    pub fn forget_after(mut self, after: Duration) -> Self {
        self.forget_after = after;
        self
    }

    /// How many accounts, and how many clients, are remembered at most (default 10 000).
    pub fn max_records(mut self, n: usize) -> Self {
        self.max_records = n.max(1);
        self
    }

    /// How a request's client is told apart (default: the peer's IP address, an IPv6 address
    /// by its /64 network, when the app is served with
    /// `into_make_service_with_connect_info::<SocketAddr>()`; else no per-client throttling).
    /// `None` exempts the request from the per-client count (the per-account one still holds).
    pub fn client_key(mut self, key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.client_key = Arc::new(key);
        self
    }

    /// The wait after `failures` failures in a row, when `free` are allowed.
    fn delay(&self, failures: u32, free: u32) -> Duration {
        let doublings = failures.saturating_sub(free).min(31);
        self.first_delay.checked_mul(1u32 << doublings).unwrap_or(self.max_delay).min(self.max_delay)
    }
}

/// The default client key: the peer's IP address (an IPv6 one by its /64 network).
fn peer_address(parts: &Parts) -> Option<String> {
    let ConnectInfo(addr) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    Some(match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = ip.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    })
}

/// The throttling key of the client making a request, as the session layer's
/// [`LoginThrottle::client_key`] sees it (an extractor for [`login_submit`](super::login_submit)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientKey {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let key =
            parts.extensions.get::<WebSession>().and_then(|w| (w.web().config().throttle.client_key)(parts));
        Ok(ClientKey(key))
    }
}

/// Failures of one account or client.
struct Record {
    failures: u32,
    /// Attempts connecting now (counted as failures until they end).
    pending: u32,
    last_failure: Instant,
}

#[derive(Default)]
struct Table {
    records: HashMap<String, Record>,
    inserts: u64,
}

/// The throttling state of one `WebSessions`.
pub(crate) struct Throttle {
    policy: LoginThrottle,
    tables: Mutex<[Table; 2]>,
}

const ACCOUNTS: usize = 0;
const CLIENTS: usize = 1;

impl Throttle {
    pub(crate) fn new(policy: LoginThrottle) -> Arc<Throttle> {
        Arc::new(Throttle { policy, tables: Mutex::new(Default::default()) })
    }

    /// Starts an attempt for `account` from `client`, or says how long to wait. The attempt
    /// counts as a failure unless [`Attempt::succeeded`] is called (a dropped request too).
    pub(crate) fn begin(
        self: &Arc<Self>,
        account: String,
        client: Option<String>,
    ) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let p = &self.policy;
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = self.wait(&mut tables[ACCOUNTS], &account, p.max_failures, now);
        if let Some(client) = &client {
            wait = wait.max(self.wait(&mut tables[CLIENTS], client, p.max_failures_per_client, now));
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        for (table, key) in [(ACCOUNTS, Some(&account)), (CLIENTS, client.as_ref())] {
            let Some(key) = key else { continue };
            let table = &mut tables[table];
            if !table.records.contains_key(key) {
                self.room(table, now);
            }
            let fresh = Record { failures: 0, pending: 0, last_failure: now };
            let record = table.records.entry(key.clone()).or_insert(fresh);
            record.pending = record.pending.saturating_add(1);
        }
        Ok(Attempt { throttle: Arc::clone(self), account, client, done: false })
    }

    /// How long `key` must wait (forgetting its record if that is over).
    fn wait(&self, table: &mut Table, key: &str, free: u32, now: Instant) -> Option<Duration> {
        let record = table.records.get(key)?;
        if self.forgotten(record, now) {
            table.records.remove(key);
            return None;
        }
        if record.failures.saturating_add(record.pending) < free {
            return None;
        }
        if record.failures < free {
            // Attempts in flight would take it past the allowance: wait for them.
            return Some(self.policy.first_delay);
        }
        let until = record.last_failure + self.policy.delay(record.failures, free);
        let wait = until.saturating_duration_since(now);
        match (wait.is_zero(), record.pending) {
            (true, 0) => None,
            (true, _) => Some(self.policy.first_delay), // one attempt at a time past the window
            (false, _) => Some(wait),
        }
    }

    /// Forgotten: no attempt in flight, and the last failure longer ago than both the
    /// forgetting time and the longest wait.
    fn forgotten(&self, record: &Record, now: Instant) -> bool {
        let keep = self.policy.forget_after.max(self.policy.max_delay);
        record.pending == 0 && now.saturating_duration_since(record.last_failure) >= keep
    }

    /// Makes room for one more record: forgets what is over (now and then, and when full), and
    /// when still full the record with the oldest failure that has no attempt in flight.
    fn room(&self, table: &mut Table, now: Instant) {
        table.inserts = table.inserts.wrapping_add(1);
        let full = table.records.len() >= self.policy.max_records;
        if full || table.inserts.is_multiple_of(1024) {
            table.records.retain(|_, r| !self.forgotten(r, now));
        }
        if table.records.len() >= self.policy.max_records {
            let oldest = table
                .records
                .iter()
                .filter(|(_, r)| r.pending == 0)
                .min_by_key(|(_, r)| r.last_failure)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                table.records.remove(&oldest);
            }
        }
    }

    fn finish(&self, account: &str, client: Option<&str>, success: bool) {
        let now = Instant::now();
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        for (table, key) in [(ACCOUNTS, Some(account)), (CLIENTS, client)] {
            let Some(key) = key else { continue };
            let records = &mut tables[table].records;
            let Some(record) = records.get_mut(key) else { continue };
            record.pending = record.pending.saturating_sub(1);
            if success && table == ACCOUNTS {
                record.failures = 0;
            } else if !success {
                record.failures = record.failures.saturating_add(1);
                record.last_failure = now;
            }
            if record.failures == 0 && record.pending == 0 {
                records.remove(key);
            }
        }
    }

    /// How many accounts and clients are remembered (for tests).
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let tables = self.tables.lock().unwrap();
        (tables[ACCOUNTS].records.len(), tables[CLIENTS].records.len())
    }
}

/// One login attempt let through: a failure unless [`succeeded`](Self::succeeded).
pub(crate) struct Attempt {
    throttle: Arc<Throttle>,
    account: String,
    client: Option<String>,
    done: bool,
}

impl Attempt {
    /// The login worked: the account's failures are cleared.
    pub(crate) fn succeeded(mut self) {
        self.done = true;
        self.throttle.finish(&self.account, self.client.as_deref(), true);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.throttle.finish(&self.account, self.client.as_deref(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(t: &Arc<Throttle>, account: &str, client: Option<&str>) {
        drop(t.begin(account.to_owned(), client.map(str::to_owned)).expect("let through"));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_in_flight_count_so_a_burst_cannot_pass_the_allowance() {
        let t = Throttle::new(LoginThrottle::default().max_failures(2));
        let a = t.begin("u".into(), None).unwrap();
        let b = t.begin("u".into(), None).unwrap();
        assert_eq!(t.begin("u".into(), None).err(), Some(Duration::from_secs(1)), "two in flight");
        a.succeeded();
        let c = t.begin("u".into(), None).expect("a success cleared the failures, b is one in flight");
        drop((b, c)); // two failures (a dropped attempt is one)
        assert_eq!(t.begin("u".into(), None).err(), Some(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_doubles_up_to_the_maximum_and_records_are_forgotten() {
        let policy = LoginThrottle::default().max_failures(1).max_delay(Duration::from_secs(5));
        let t = Throttle::new(policy);
        for expected in [1, 2, 4, 5, 5] {
            fail(&t, "u", None);
            assert_eq!(t.begin("u".into(), None).err(), Some(Duration::from_secs(expected)));
            tokio::time::advance(Duration::from_secs(expected)).await;
        }
        tokio::time::advance(Duration::from_secs(15 * 60)).await;
        assert!(t.begin("u".into(), None).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_tables_are_capped() {
        let t = Throttle::new(LoginThrottle::default().max_records(3));
        for n in 0..10 {
            fail(&t, &format!("user-{n}"), Some(&format!("client-{n}")));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(t.len(), (3, 3));
    }
}

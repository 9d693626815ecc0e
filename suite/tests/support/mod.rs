//! Test helpers: a provider that counts what happens to it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use connscope::{Connection, GlobalScope, Provider, SessionScope};

/// Counts connects, closes and is_open calls; `open` is what is_open answers.
#[derive(Debug)]
pub struct Probe {
    pub connects: AtomicU64,
    pub closes: AtomicU64,
    pub checks: AtomicU64,
    pub open: AtomicBool,
    pub fail_connect: AtomicBool,
    pub connect_delay_ms: AtomicU64,
}

impl Probe {
    pub fn new() -> Arc<Probe> {
        Arc::new(Probe {
            connects: AtomicU64::new(0),
            closes: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            open: AtomicBool::new(true),
            fail_connect: AtomicBool::new(false),
            connect_delay_ms: AtomicU64::new(0),
        })
    }
    pub fn connects(&self) -> u64 {
        self.connects.load(SeqCst)
    }
    pub fn closes(&self) -> u64 {
        self.closes.load(SeqCst)
    }
    pub fn checks(&self) -> u64 {
        self.checks.load(SeqCst)
    }
    pub fn set_open(&self, open: bool) {
        self.open.store(open, SeqCst)
    }

    async fn connect(&self) -> Result<Client, Refused> {
        let delay = self.connect_delay_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.fail_connect.load(SeqCst) {
            return Err(Refused);
        }
        let serial = self.connects.fetch_add(1, SeqCst) + 1;
        Ok(Client { serial })
    }
}

/// The "live client" of the probe provider.
#[derive(Debug, PartialEq, Eq)]
pub struct Client {
    pub serial: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("connection refused by the test probe")]
pub struct Refused;

/// A provider built in code around a probe.
pub struct ProbeProvider(pub Arc<Probe>);

impl Provider for ProbeProvider {
    type Raw = Client;
    type Error = Refused;
    async fn connect(&self) -> Result<Client, Refused> {
        self.0.connect().await
    }
    async fn is_open(&self, _raw: &Client) -> bool {
        self.0.checks.fetch_add(1, SeqCst);
        self.0.open.load(SeqCst)
    }
    async fn close(&self, _raw: &Client) {
        self.0.closes.fetch_add(1, SeqCst);
    }
}

/// Probes by label, so providers deserialized from configuration find theirs.
static PROBES: LazyLock<Mutex<HashMap<String, Arc<Probe>>>> = LazyLock::new(Default::default);

pub fn probe(label: &str) -> Arc<Probe> {
    PROBES.lock().unwrap().entry(label.to_owned()).or_insert_with(Probe::new).clone()
}

/// A global provider configured from `[connections.<name>]` (field `label` picks the probe).
#[derive(Debug, serde::Deserialize)]
pub struct Warehouse {
    pub label: String,
    #[serde(default)]
    pub password: Option<connscope::Secret>,
    #[serde(default)]
    pub port: Option<u16>,
}

impl Provider for Warehouse {
    type Raw = Client;
    type Error = Refused;
    async fn connect(&self) -> Result<Client, Refused> {
        probe(&self.label).connect().await
    }
    async fn is_open(&self, _raw: &Client) -> bool {
        let p = probe(&self.label);
        p.checks.fetch_add(1, SeqCst);
        p.open.load(SeqCst)
    }
    async fn close(&self, _raw: &Client) {
        probe(&self.label).closes.fetch_add(1, SeqCst);
    }
}

impl Connection for Warehouse {
    type Scope = GlobalScope;
    const NAME: &'static str = "warehouse";
    const HEALTH_CHECK: connscope::HealthCheck = connscope::HealthCheck::EveryUse;
}

/// A session-scoped provider (one client per user session).
#[derive(Debug, serde::Deserialize)]
pub struct UserDb {
    pub label: String,
}

impl Provider for UserDb {
    type Raw = Client;
    type Error = Refused;
    async fn connect(&self) -> Result<Client, Refused> {
        probe(&self.label).connect().await
    }
    async fn is_open(&self, _raw: &Client) -> bool {
        probe(&self.label).open.load(SeqCst)
    }
    async fn close(&self, _raw: &Client) {
        probe(&self.label).closes.fetch_add(1, SeqCst);
    }
}

impl Connection for UserDb {
    type Scope = SessionScope;
    const NAME: &'static str = "userdb";
}

/// A runtime that reads no file and no process environment.
pub fn runtime() -> connscope::RuntimeBuilder {
    connscope::Runtime::builder().secrets_file("/nonexistent/connscope-test-secrets.toml").env_vars(Vec::<(
        String,
        String,
    )>::new(
    ))
}

/// Records each released value and when; tests wait on it instead of sleeping.
pub struct ReleaseLog {
    entries: Mutex<Vec<(u32, tokio::time::Instant)>>,
    changed: tokio::sync::Notify,
}

impl ReleaseLog {
    pub const fn new() -> Self {
        ReleaseLog { entries: Mutex::new(Vec::new()), changed: tokio::sync::Notify::const_new() }
    }

    pub fn record(&self, v: u32) {
        self.entries.lock().unwrap().push((v, tokio::time::Instant::now()));
        self.changed.notify_waiters();
    }

    pub fn values(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.entries.lock().unwrap().iter().map(|e| e.0).collect();
        v.sort();
        v
    }

    pub fn count_of(&self, v: u32) -> usize {
        self.entries.lock().unwrap().iter().filter(|e| e.0 == v).count()
    }

    pub fn released_at(&self, v: u32) -> Option<tokio::time::Instant> {
        self.entries.lock().unwrap().iter().find(|e| e.0 == v).map(|e| e.1)
    }

    /// Waits (in Tokio time, so paused clocks auto-advance) until `n` values were released.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.entries.lock().unwrap().len() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// Declares a `Resource<u32, u32>` whose release hook records into a `ReleaseLog`.
#[macro_export]
macro_rules! tracked_resource {
    ($res:ident, $log:ident, $scope:expr, $ttl:expr, $max:expr) => {
        static $log: support::ReleaseLog = support::ReleaseLog::new();
        static $res: connscope::Resource<u32, u32> = connscope::Resource::new(
            stringify!($res),
            $scope,
            $ttl,
            $max,
            Some(|v| {
                Box::pin(async move {
                    $log.record(v);
                    Ok(())
                })
            }),
        );
    };
}

/// A secrets file in the temp directory, removed when dropped.
pub struct SecretsFile(pub std::path::PathBuf);

impl std::ops::Deref for SecretsFile {
    type Target = std::path::PathBuf;
    fn deref(&self) -> &std::path::PathBuf {
        &self.0
    }
}

impl Drop for SecretsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `contents` to a fresh secrets file (unique per process and call).
pub fn secrets(contents: &str) -> SecretsFile {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "connscope-test-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, SeqCst)
    ));
    std::fs::write(&path, contents).unwrap();
    SecretsFile(path)
}

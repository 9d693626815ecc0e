//! Several app instances as separate processes (`suite/instance/results.rs`) on loopback,
//! sharing a real Redis: starting them with their secrets file, talking to them over HTTP,
//! reading their counters. Used by `redis_instances.rs` and `redis_sql.rs`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::own_redis::OwnRedis;

pub const BIN: &str = env!("CARGO_BIN_EXE_results-instance");

pub fn redis_url() -> Option<String> {
    let url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!(
            "\n*** SKIPPED multi-instance tests: set REDIS_URL=redis://127.0.0.1:6379 to run the multi-instance tests ***"
        );
    }
    url
}

/// A fresh directory and key prefix per test.
pub fn scratch(name: &str) -> (PathBuf, String) {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let id = format!("{name}-{}-{stamp}", std::process::id());
    let dir = std::env::temp_dir().join(format!("connscope-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    (dir, format!("connscope-test:{id}"))
}

pub struct Instance {
    pub name: String,
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub instances: Vec<Instance>,
    pub http: reqwest::Client,
}

impl Cluster {
    /// `n` instances on `url`, with the `[redis]` settings given (`url` and `prefix` added).
    pub fn start(name: &str, n: usize, url: &str, extra: &str) -> Cluster {
        let (dir, prefix) = scratch(name);
        let secrets = dir.join("secrets.toml");
        // `[connections.items]`: the SQLite file of the shared SQL reads (created by the test).
        let items = dir.join("items.db");
        let text = format!(
            "[redis]\nurl = \"{url}\"\nprefix = \"{prefix}\"\n{extra}\n\n[connections.items]\nurl = \"sqlite://{}\"\n",
            items.display()
        );
        std::fs::write(&secrets, text).unwrap();
        std::fs::write(dir.join("source"), "0").unwrap();
        let instances = (0..n).map(|i| spawn(&dir, &format!("i{i}"))).collect();
        Cluster { dir, instances, http: reqwest::Client::new() }
    }

    pub fn set_source(&self, generation: u64) {
        let tmp = self.dir.join("source.tmp");
        std::fs::write(&tmp, generation.to_string()).unwrap();
        std::fs::rename(tmp, self.dir.join("source")).unwrap();
    }

    pub async fn report(&self, i: usize, k: u64, delay_ms: u64) -> Result<Value, String> {
        let url = format!("{}/report/{k}?delay_ms={delay_ms}", self.instances[i].base);
        let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{}: {}", resp.status(), resp.text().await.unwrap_or_default()));
        }
        serde_json::from_str(&resp.text().await.map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }

    pub async fn invalidate(&self, i: usize, k: u64) {
        let url = format!("{}/invalidate/{k}", self.instances[i].base);
        assert!(self.http.post(url).send().await.unwrap().status().is_success());
    }

    /// `GET` a JSON answer from instance `i`.
    pub async fn get(&self, i: usize, path: &str) -> Result<Value, String> {
        let resp = self
            .http
            .get(format!("{}{path}", self.instances[i].base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !ok {
            return Err(text);
        }
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    }

    /// `POST` to instance `i`; its JSON answer.
    pub async fn post(&self, i: usize, path: &str) -> Value {
        let resp = self.http.post(format!("{}{path}", self.instances[i].base)).send().await.unwrap();
        assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
        serde_json::from_str(&resp.text().await.unwrap()).unwrap()
    }

    pub async fn stats(&self, i: usize) -> Value {
        let url = format!("{}/stats", self.instances[i].base);
        serde_json::from_str(&self.http.get(url).send().await.unwrap().text().await.unwrap()).unwrap()
    }

    pub async fn sum(&self, field: &str) -> u64 {
        let mut total = 0;
        for i in 0..self.instances.len() {
            total += self.stats(i).await[field].as_u64().unwrap();
        }
        total
    }

    /// One body run across the instances since `body_runs` was `before` — or, for each Redis
    /// command that failed since `failures` was `failed` (a 200 ms command timeout on a loaded
    /// machine), at most one more: a caller whose command fails runs its own body, by design.
    pub async fn assert_once(&self, before: u64, failed: u64) {
        let runs = self.sum("body_runs").await - before;
        let failed = self.sum("failures").await - failed;
        assert!(
            runs >= 1 && runs <= 1 + failed,
            "{runs} body runs across the instances, {failed} failed commands"
        );
    }

    /// Waits until `cond` holds for instance `i`'s stats.
    pub async fn until(
        &self,
        i: usize,
        what: &str,
        limit: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let stats = self.stats(i).await;
            if cond(&stats) {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "instance {i}: {what} not within {limit:?}: {stats}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.instances.clear();
        if std::env::var_os("KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

pub fn spawn(dir: &Path, name: &str) -> Instance {
    let log = dir.join(format!("{name}.log"));
    let mut child = Command::new(BIN)
        .env("CONNSCOPE_SECRETS", dir.join("secrets.toml"))
        .env("SOURCE", dir.join("source"))
        .env("NAME", name)
        .env_remove("REDIS_URL")
        .env("RUST_LOG", std::env::var("INSTANCE_LOG").unwrap_or_else(|_| "connscope=info".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the instance binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("PORT <n>");
    Instance { name: name.to_owned(), child, base: format!("http://127.0.0.1:{port}"), log }
}

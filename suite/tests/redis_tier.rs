//! The shared tier seen from inside one process: two runtimes with the same `[redis]` prefix are
//! two instances (each its own bus, locks and local caches), against a real Redis (enabled by
//! `REDIS_URL`). Versions, an invalidation racing a load, callers dropped holding a lock,
//! hostile bus messages, clears, and a Redis that is not there at all.

#[cfg(not(feature = "redis"))]
#[test]
fn redis_tier_needs_the_redis_feature() {
    eprintln!("\n*** SKIPPED redis_tier: build with `--features redis` (or --all-features) ***");
}

#[cfg(feature = "redis")]
mod own_redis;

#[cfg(feature = "redis")]
mod tier {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use connscope::redis::{RedisSettings, RedisState};
    use connscope::{Resource, Runtime, Scope, SharedSpec};
    use tokio::sync::Notify;

    fn redis_url() -> Option<String> {
        let url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
        if url.is_none() {
            eprintln!("\n*** SKIPPED redis_tier: set REDIS_URL=redis://127.0.0.1:6379 to run ***");
        }
        url
    }

    fn prefix(name: &str) -> String {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("connscope-test:{name}-{}-{stamp}", std::process::id())
    }

    /// `n` runtimes sharing one prefix: `n` instances.
    fn instances(n: usize, settings: RedisSettings) -> Vec<Runtime> {
        (0..n).map(|_| Runtime::builder().no_idle_timeout().redis(settings.clone()).build()).collect()
    }

    /// Runs `fut` in a session of `rt`, so global resources use `rt`'s caches and tier.
    async fn on<F: Future>(rt: &Runtime, fut: F) -> F::Output {
        rt.session().run(fut).await
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(5), "{what}: not within 5 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    const TTL: Option<Duration> = Some(Duration::from_secs(600));

    static OLD: Resource<u64, String> =
        Resource::new("versioned", Scope::Global, TTL, None, None).shared(SharedSpec::new("1"));
    static OLD_AGAIN: Resource<u64, String> =
        Resource::new("versioned", Scope::Global, TTL, None, None).shared(SharedSpec::new("1"));
    static NEW: Resource<u64, String> =
        Resource::new("versioned", Scope::Global, TTL, None, None).shared(SharedSpec::new("2"));

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_written_by_another_version_is_never_read() {
        let Some(url) = redis_url() else { return };
        let rt = instances(1, RedisSettings::new(url).prefix(prefix("version"))).remove(0);
        let old = on(&rt, OLD.get_or_run(1, async { "old layout".to_owned() })).await;
        assert_eq!(old, "old layout");
        // The same version elsewhere reads it from Redis (no body)...
        let again = on(&rt, OLD_AGAIN.get_or_run(1, async { unreachable!("read from Redis") })).await;
        assert_eq!(again, "old layout");
        // ...another version never does.
        let new = on(&rt, NEW.get_or_run(1, async { "new layout".to_owned() })).await;
        assert_eq!(new, "new layout");
        let stats = rt.redis_stats().unwrap();
        assert_eq!((stats.computed, stats.remote_hits, stats.stored), (2, 1, 2));
        rt.shutdown().await;
    }

    static KEPT_RUNS: AtomicU64 = AtomicU64::new(0);

    #[connscope::cached_resource(scope = "global", ttl = "10m", shared = true)]
    async fn kept(k: u64) -> u64 {
        k * 100 + KEPT_RUNS.fetch_add(1, Ordering::SeqCst) + 1
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_read_from_redis_is_kept_here_no_longer_than_redis_keeps_it() {
        let Some(url) = redis_url() else { return };
        let prefix = prefix("kept");
        let rts = instances(2, RedisSettings::new(url.clone()).prefix(prefix.clone()));
        let (a, b) = (&rts[0], &rts[1]);
        assert_eq!(on(a, kept(1)).await, 101, "computed on a, stored in Redis for 10 minutes");
        // Redis is told to keep it 1.5 s more only (as if it had been stored long ago).
        let client = redis::Client::open(url).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<Vec<u8>> =
            redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut redis).await.unwrap();
        let values: Vec<_> = keys.iter().filter(|k| k.windows(3).any(|w| w == b":v:")).collect();
        let [value] = values[..] else { panic!("one stored value: {keys:?}") };
        let _: i64 = redis::cmd("PEXPIRE").arg(value).arg(1500).query_async(&mut redis).await.unwrap();
        assert_eq!(on(b, kept(1)).await, 101, "read from Redis on b");
        assert_eq!(on(b, kept(1)).await, 101, "then kept on b");
        assert_eq!(b.redis_stats().unwrap().remote_hits, 1);
        // Redis drops it; b's copy goes with it (give b's read its round trip): b computes anew.
        let start = std::time::Instant::now();
        while redis::cmd("EXISTS").arg(value).query_async::<i64>(&mut redis).await.unwrap() == 1 {
            assert!(start.elapsed() < Duration::from_secs(5), "Redis kept the value");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(on(b, kept(1)).await, 102, "b no longer serves a copy Redis dropped");
        assert_eq!(on(a, kept(1)).await, 101, "a's own copy keeps its full ttl");
        assert_eq!(KEPT_RUNS.load(Ordering::SeqCst), 2);
        for rt in rts {
            rt.shutdown().await;
        }
    }

    static REFRESH_BODY_RUNS: AtomicU64 = AtomicU64::new(0);

    /// A shared value refreshed in the background: the refresh goes through the tier too.
    #[connscope::cached_resource(scope = "global", ttl = "2s", refresh = "background", shared = true)]
    async fn refreshed(k: u64) -> u64 {
        k * 100 + REFRESH_BODY_RUNS.fetch_add(1, Ordering::SeqCst) + 1
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_background_refresh_is_shared_too() {
        let Some(url) = redis_url() else { return };
        let rts = instances(2, RedisSettings::new(url).prefix(prefix("refresh")));
        let (a, b) = (&rts[0], &rts[1]);
        assert_eq!(on(a, refreshed(1)).await, 101);
        assert_eq!(on(b, refreshed(1)).await, 101, "read from Redis");
        assert_eq!(REFRESH_BODY_RUNS.load(Ordering::SeqCst), 1);
        // Both copies go stale (ttl 2 s; Redis's copy expires with them).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(on(a, refreshed(1)).await, 101, "stale, served at once while it refreshes");
        let mut fresh = 0;
        for _ in 0..500 {
            fresh = on(a, refreshed(1)).await;
            if fresh != 101 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(fresh, 102, "refreshed by a body run on instance a");
        // Instance b's copy is stale too: its refresh reads a's value from Redis.
        assert_eq!(on(b, refreshed(1)).await, 101, "stale on b, served at once");
        let mut seen = 0;
        for _ in 0..500 {
            seen = on(b, refreshed(1)).await;
            if seen != 101 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(seen, 102, "b took a's refresh");
        assert_eq!(REFRESH_BODY_RUNS.load(Ordering::SeqCst), 2, "one body run per refresh across instances");
        assert_eq!(b.redis_stats().unwrap().remote_hits, 2);
        for rt in rts {
            rt.shutdown().await;
        }
    }

    static BLIPPED: Resource<u64, u64> =
        Resource::new("blipped", Scope::Global, TTL, None, None).shared(SharedSpec::new("1"));

    /// An invalidation whose command times out while Redis stays up (a hiccup shorter than the
    /// bound, so no outage is declared) is sent again within a heartbeat, not at the next
    /// outage's end: the other instance stops serving the value.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalidation_that_timed_out_while_redis_stayed_up_is_sent_again() {
        if redis_url().is_none() {
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let Some(redis) = super::own_redis::OwnRedis::start(port) else {
            eprintln!("\n*** SKIPPED redis_tier hiccup: no `redis-server` on PATH ***");
            return;
        };
        let settings = RedisSettings::new(format!("redis://127.0.0.1:{port}"))
            .prefix(prefix("hiccup"))
            .invalidation_bound(Duration::from_secs(4))
            .command_timeout(Duration::from_millis(100));
        let rts = instances(2, settings);
        let (a, b) = (&rts[0], &rts[1]);
        assert_eq!(on(a, BLIPPED.get_or_run(1, async { 1 })).await, 1);
        assert_eq!(on(b, BLIPPED.get_or_run(1, async { unreachable!("read from Redis") })).await, 1);
        // Redis stops answering for 0.6 s; the invalidation's command times out meanwhile.
        let mut sleeper = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "debug", "sleep", "0.6"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while super::own_redis::answers(port) {
            assert!(start.elapsed() < Duration::from_secs(2), "the server never went to sleep");
        }
        let failures = a.redis_stats().unwrap().failures;
        assert!(on(a, BLIPPED.invalidate(&1)).await, "removed here at once");
        assert!(a.redis_stats().unwrap().failures > failures, "its command timed out");
        sleeper.wait().unwrap();
        assert_ne!(a.redis_stats().unwrap().state, Some(RedisState::Down), "a hiccup, not an outage");
        let start = std::time::Instant::now();
        loop {
            let seen = on(b, BLIPPED.get_or_run(1, async { 2 })).await;
            if seen == 2 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(3), "b still serves the invalidated value");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("after the hiccup, b dropped the invalidated value within {:?}", start.elapsed());
        for rt in rts {
            rt.shutdown().await;
        }
        drop(redis);
    }

    static RACED: Resource<u64, u64> =
        Resource::new("raced", Scope::Global, TTL, None, None).shared(SharedSpec::new("1"));

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_read_before_an_invalidation_elsewhere_is_not_stored() {
        let Some(url) = redis_url() else { return };
        let rts = instances(2, RedisSettings::new(url).prefix(prefix("raced")));
        let (a, b) = (rts[0].clone(), rts[1].clone());
        let gate = Arc::new(Notify::new());
        let started = Arc::new(AtomicU64::new(0));
        // A reads the "database" (old data), then waits for the gate before returning.
        let load = {
            let (a, gate, started) = (a.clone(), gate.clone(), started.clone());
            tokio::spawn(async move {
                on(
                    &a,
                    RACED.get_or_run(1, async move {
                        started.store(1, Ordering::SeqCst);
                        gate.notified().await;
                        10
                    }),
                )
                .await
            })
        };
        until("A's load started", || started.load(Ordering::SeqCst) == 1).await;
        // The data changes; B invalidates.
        on(&b, RACED.invalidate(&1)).await;
        gate.notify_one();
        assert_eq!(load.await.unwrap(), 10, "A's caller still gets what its body returned");
        let sa = a.redis_stats().unwrap();
        assert_eq!((sa.stored, sa.store_refused), (0, 1), "{sa:?}");
        // Nothing stale in Redis, nor cached on A: the next caller on either computes anew.
        assert_eq!(on(&b, RACED.get_or_run(1, async { 11 })).await, 11);
        assert_eq!(on(&a, RACED.get_or_run(1, async { 12 })).await, 11, "A reads B's new value from Redis");
        for rt in rts {
            rt.shutdown().await;
        }
    }

    static DROPPED: Resource<u64, u64> =
        Resource::new("dropped", Scope::Global, TTL, None, None).shared(SharedSpec::new("1"));

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_dropped_while_computing_releases_the_lock_at_once() {
        let Some(url) = redis_url() else { return };
        // A lock that would otherwise block the others for 30 s.
        let rts =
            instances(2, RedisSettings::new(url).prefix(prefix("dropped")).lock_ttl(Duration::from_secs(30)));
        let (a, b) = (rts[0].clone(), rts[1].clone());
        let started = Arc::new(AtomicU64::new(0));
        let s = started.clone();
        let timed_out = tokio::time::timeout(
            Duration::from_millis(300),
            on(
                &a,
                DROPPED.get_or_run(1, async move {
                    s.store(1, Ordering::SeqCst);
                    std::future::pending::<u64>().await
                }),
            ),
        )
        .await;
        assert!(timed_out.is_err() && started.load(Ordering::SeqCst) == 1);
        let asked = std::time::Instant::now();
        let v = tokio::time::timeout(Duration::from_secs(10), on(&b, DROPPED.get_or_run(1, async { 7 })))
            .await
            .expect("B waited for a lock nobody holds");
        assert_eq!(v, 7);
        let sb = b.redis_stats().unwrap();
        assert_eq!((sb.computed, sb.takeovers), (1, 0), "{sb:?}");
        eprintln!("after a dropped holder, another instance computed in {:?}", asked.elapsed());
        for rt in rts {
            rt.shutdown().await;
        }
    }

    static RELEASES: AtomicU64 = AtomicU64::new(0);
    fn count_release(_: u64) -> connscope::BoxFuture<'static, Result<(), connscope::HookError>> {
        RELEASES.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
    static CLEARED: Resource<u64, u64> =
        Resource::new("cleared", Scope::Global, TTL, None, Some(count_release)).shared(SharedSpec::new("1"));

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clear_reaches_every_instance_and_each_releases_its_own_values_once() {
        let Some(url) = redis_url() else { return };
        let rts = instances(3, RedisSettings::new(url).prefix(prefix("cleared")));
        for rt in &rts {
            for k in 0..5 {
                on(rt, CLEARED.get_or_run(k, async move { k * 10 })).await;
            }
        }
        assert_eq!(rts.iter().map(|rt| rt.redis_stats().unwrap().computed).sum::<u64>(), 5);
        let report = on(&rts[0], CLEARED.clear()).await;
        assert_eq!(report.released, 5);
        // Each of the other two releases its 5 local values, once.
        until("the others released theirs", || RELEASES.load(Ordering::SeqCst) == 15).await;
        for rt in &rts[1..] {
            assert_eq!(on(rt, CLEARED.get_or_run(1, async { 99 })).await, 99, "nothing left in Redis");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(RELEASES.load(Ordering::SeqCst), 15, "released exactly once");
        for rt in rts {
            rt.shutdown().await;
        }
    }

    static HOSTILE: Resource<u64, u64> =
        Resource::new("hostile", Scope::Global, TTL, None, None).shared(SharedSpec::new("1"));

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_on_the_bus_is_ignored() {
        let Some(url) = redis_url() else { return };
        let p = prefix("hostile");
        let rt = instances(1, RedisSettings::new(&url).prefix(&p)).remove(0);
        assert_eq!(on(&rt, HOSTILE.get_or_run(1, async { 1 })).await, 1);
        let client = redis_client(&url).await;
        let channel = format!("{p}:bus");
        let mut conn = client;
        // Garbage, truncated messages, an invalidation of an unknown resource, an undecodable key.
        let mut evil: Vec<Vec<u8>> = vec![vec![], b"Z".to_vec(), b"I\x01".to_vec(), vec![b'I'; 100_000]];
        let mut inv = vec![b'I'];
        inv.extend_from_slice(&0u64.to_le_bytes());
        for (resource, key) in [("nope:1", &[1u8][..]), ("hostile:1", &[0xff, 0xff, 0xff][..])] {
            let mut m = inv.clone();
            m.extend_from_slice(&(resource.len() as u32).to_le_bytes());
            m.extend_from_slice(resource.as_bytes());
            m.extend_from_slice(&(key.len() as u32).to_le_bytes());
            m.extend_from_slice(key);
            evil.push(m);
        }
        for m in evil {
            let _: i64 = redis_cmd(&mut conn, &["PUBLISH"], &[channel.as_bytes(), &m]).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(on(&rt, HOSTILE.get_or_run(1, async { 2 })).await, 1, "still served locally");
        assert_eq!(rt.redis_stats().unwrap().state, Some(RedisState::Up));
        rt.shutdown().await;
    }

    static NOWHERE: Resource<u64, u64> =
        Resource::new("nowhere", Scope::Global, TTL, None, None).shared(SharedSpec::new("1"));

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_no_redis_listening_every_call_still_succeeds() {
        if redis_url().is_none() {
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let settings = RedisSettings::new(format!("redis://127.0.0.1:{port}"))
            .prefix(prefix("nowhere"))
            .invalidation_bound(Duration::from_millis(200))
            .command_timeout(Duration::from_millis(100));
        let rt = instances(1, settings).remove(0);
        let runs = Arc::new(AtomicU64::new(0));
        for k in 0..20 {
            let r = runs.clone();
            let v = on(
                &rt,
                NOWHERE.get_or_run(k % 4, async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    k % 4
                }),
            )
            .await;
            assert_eq!(v, k % 4);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 4, "served from the local tier");
        let start = std::time::Instant::now();
        while rt.redis_stats().unwrap().state != Some(RedisState::Down) {
            assert!(start.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(rt.redis_stats().unwrap().outages, 1);
        rt.shutdown().await;
    }

    /// A plain connection for the test's own commands (the test talks RESP itself: the suite
    /// does not depend on a Redis client).
    async fn redis_client(url: &str) -> tokio::net::TcpStream {
        let addr = url.trim_start_matches("redis://").trim_end_matches('/');
        tokio::net::TcpStream::connect(addr).await.unwrap()
    }

    async fn redis_cmd(conn: &mut tokio::net::TcpStream, words: &[&str], bytes: &[&[u8]]) -> i64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = format!("*{}\r\n", words.len() + bytes.len()).into_bytes();
        for w in words.iter().map(|w| w.as_bytes()).chain(bytes.iter().copied()) {
            out.extend(format!("${}\r\n", w.len()).into_bytes());
            out.extend_from_slice(w);
            out.extend_from_slice(b"\r\n");
        }
        conn.write_all(&out).await.unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).await.unwrap();
        let reply = std::str::from_utf8(&buf[..n]).unwrap();
        reply.trim().trim_start_matches(':').parse().unwrap_or(-1)
    }
}

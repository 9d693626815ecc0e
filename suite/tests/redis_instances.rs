//! Several app instances as separate processes (`suite/instance/results.rs`) sharing results
//! through a real Redis (enabled by `REDIS_URL`): a miss computed once for all, invalidations
//! everywhere within the bound (worst case over 100 tries), a dead instance's load taken over,
//! Redis stopped mid-run with zero failed calls.

#[cfg(not(all(feature = "redis", feature = "axum", feature = "sqlite")))]
#[test]
fn redis_instances_need_the_redis_and_axum_features() {
    eprintln!(
        "\n*** SKIPPED redis_instances: build with `--features redis,axum,sqlite` (or --all-features) ***"
    );
}

#[cfg(all(feature = "redis", feature = "axum", feature = "sqlite"))]
mod instances_support;
#[cfg(all(feature = "redis", feature = "axum", feature = "sqlite"))]
mod own_redis;

#[cfg(all(feature = "redis", feature = "axum", feature = "sqlite"))]
mod instances {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::instances_support::{Cluster, OwnRedis, redis_url};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_miss_seen_by_three_instances_at_once_is_computed_once() {
        let Some(url) = redis_url() else { return };
        let c = Cluster::start("once", 3, &url, "");
        c.set_source(1);
        // Three instances miss the same key at once; the body takes 300 ms.
        let (a, b, d) = tokio::join!(c.report(0, 7, 300), c.report(1, 7, 300), c.report(2, 7, 300));
        for r in [&a, &b, &d] {
            assert_eq!(r.as_ref().unwrap()["generation"], 1);
        }
        assert_eq!(c.sum("body_runs").await, 1, "one body run across the three instances");
        assert_eq!(c.sum("stored").await, 1);
        // The other two read it from Redis (having waited for it, or just after it was stored).
        assert_eq!(c.sum("remote_hits").await, 2);
        assert!(c.sum("waited").await <= 2);
        // Then each serves its local copy: no body, no Redis.
        let before = c.sum("remote_hits").await;
        for i in 0..3 {
            assert_eq!(c.report(i, 7, 0).await.unwrap()["computed_by"], a.as_ref().unwrap()["computed_by"]);
        }
        assert_eq!(c.sum("body_runs").await, 1);
        assert_eq!(c.sum("remote_hits").await, before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalidation_on_one_instance_reaches_the_others_within_the_bound() {
        let Some(url) = redis_url() else { return };
        let c = Cluster::start("invalidate", 3, &url, "invalidation_bound = \"1s\"");
        c.set_source(0);
        for i in 0..3 {
            c.report(i, 1, 0).await.unwrap();
        }
        let mut worst = Duration::ZERO;
        let mut all = Vec::new();
        for generation in 1..=100u64 {
            c.set_source(generation);
            let from = (generation % 3) as usize;
            c.invalidate(from, 1).await;
            let invalidated = Instant::now();
            for i in (0..3).filter(|&i| i != from) {
                // Poll until the instance serves the new generation; the latency is measured to
                // the start of the first request that got it.
                loop {
                    let asked = Instant::now();
                    let got = c.report(i, 1, 0).await.unwrap()["generation"].as_u64().unwrap();
                    if got == generation {
                        let stale_for = asked.saturating_duration_since(invalidated);
                        worst = worst.max(stale_for);
                        all.push(stale_for);
                        break;
                    }
                    assert!(invalidated.elapsed() < Duration::from_secs(5), "instance {i} stuck at {got}");
                }
            }
            // The invalidating instance itself never serves the old value.
            assert_eq!(c.report(from, 1, 0).await.unwrap()["generation"], generation);
        }
        all.sort();
        eprintln!(
            "invalidation reached the other instances: median {:?}, p99 {:?}, worst {worst:?} over {} observations",
            all[all.len() / 2],
            all[all.len() * 99 / 100],
            all.len()
        );
        assert!(worst <= Duration::from_secs(1), "worst {worst:?} past the 1 s bound");
        // Every instance released its own local value once per invalidation it saw.
        for i in 0..3 {
            let s = c.stats(i).await;
            assert!(s["releases"].as_u64().unwrap() >= 66, "instance {i}: {s}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_that_dies_holding_a_load_is_taken_over_after_its_lock_expires() {
        let Some(url) = redis_url() else { return };
        let mut c = Cluster::start("takeover", 2, &url, "lock_ttl = \"1s\"");
        c.set_source(3);
        // Instance 0 starts a load that would take 20 s, then dies holding its lock.
        let http = c.http.clone();
        let slow = format!("{}/report/5?delay_ms=20000", c.instances[0].base);
        let pending = tokio::spawn(async move { http.get(slow).send().await.map(|r| r.status()) });
        c.until(0, "the load started", Duration::from_secs(5), |s| s["computed"] == 1).await;
        c.instances[0].child.kill().unwrap();
        let _ = pending.await;
        let asked = Instant::now();
        let got = c.report(1, 5, 0).await.unwrap();
        let waited = asked.elapsed();
        assert_eq!(got["generation"], 3);
        assert_eq!(got["computed_by"], "i1");
        let s = c.stats(1).await;
        assert_eq!((s["takeovers"].as_u64(), s["body_runs"].as_u64()), (Some(1), Some(1)), "{s}");
        eprintln!("a dead holder's load was taken over after {waited:?} (lock ttl 1 s)");
        assert!(waited < Duration::from_secs(3), "took {waited:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_stopped_mid_run_fails_no_call_warns_once_and_comes_back() {
        if redis_url().is_none() {
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let Some(mut redis) = OwnRedis::start(port) else {
            eprintln!(
                "\n*** SKIPPED redis_stopped_mid_run: no `redis-server` on PATH to stop and restart ***"
            );
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let c = Cluster::start("down", 3, &url, "invalidation_bound = \"1s\"\ncommand_timeout = \"200ms\"");
        c.set_source(1);
        let mut calls = 0u64;
        let mut failed = Vec::new();
        // A steady stream of calls on every instance: before, during and after the outage.
        let mut drive = async |c: &Cluster, until: Instant| {
            let mut k = 0u64;
            while Instant::now() < until {
                k += 1;
                for i in 0..3 {
                    calls += 1;
                    if let Err(e) = c.report(i, k % 10, 0).await {
                        failed.push(e);
                    }
                }
            }
        };
        drive(&c, Instant::now() + Duration::from_secs(1)).await;
        redis.stop();
        drive(&c, Instant::now() + Duration::from_secs(3)).await;
        for i in 0..3 {
            assert_eq!(c.stats(i).await["state"], "Some(Down)");
        }
        let redis = OwnRedis::start(port).expect("restart redis-server");
        let restarted = Instant::now();
        let mut back = Duration::ZERO;
        for i in 0..3 {
            c.until(i, "Redis back", Duration::from_secs(10), |s| s["state"] == "Some(Up)").await;
            back = back.max(restarted.elapsed());
        }
        drive(&c, Instant::now() + Duration::from_millis(500)).await;
        assert!(
            failed.is_empty(),
            "{} of {calls} calls failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
        for inst in &c.instances {
            let log = inst.log_text();
            let warnings = log.matches("Redis is unreachable").count();
            assert_eq!(warnings, 1, "{}: {warnings} warnings:\n{log}", inst.name);
        }
        for i in 0..3 {
            assert_eq!(c.stats(i).await["outages"], 1);
        }
        // Shared again: a new key is computed once across the three.
        let (before, failed) = (c.sum("body_runs").await, c.sum("failures").await);
        let _ = tokio::join!(c.report(0, 99, 200), c.report(1, 99, 200), c.report(2, 99, 200));
        c.assert_once(before, failed).await;
        eprintln!(
            "Redis stopped mid-run: {calls} calls, 0 failed; the tier was back {back:?} after the restart"
        );
        drop(redis);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_redis_fails_no_call_and_the_tier_comes_back() {
        if redis_url().is_none() {
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let Some(redis) = OwnRedis::start(port) else {
            eprintln!("\n*** SKIPPED a_hung_redis: no `redis-server` on PATH ***");
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let c = Cluster::start("hung", 3, &url, "invalidation_bound = \"1s\"\ncommand_timeout = \"200ms\"");
        c.set_source(1);
        for i in 0..3 {
            c.report(i, 1, 0).await.unwrap();
        }
        // The server stops answering for 3 s (`DEBUG SLEEP`): sockets stay open, nothing comes back.
        let sleeper = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "debug", "sleep", "3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli");
        let hung = Instant::now();
        let (mut calls, mut failed) = (0u64, Vec::new());
        let mut k = 0u64;
        while hung.elapsed() < Duration::from_secs(3) {
            k += 1;
            for i in 0..3 {
                calls += 1;
                if let Err(e) = c.report(i, k % 10, 0).await {
                    failed.push(e);
                }
            }
        }
        let _ = tokio::task::spawn_blocking(move || {
            let mut sleeper = sleeper;
            sleeper.wait()
        })
        .await;
        let mut back = Duration::ZERO;
        for i in 0..3 {
            c.until(i, "Redis back", Duration::from_secs(10), |s| s["state"] == "Some(Up)").await;
            back = back.max(hung.elapsed());
        }
        assert!(
            failed.is_empty(),
            "{} of {calls} calls failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
        for inst in &c.instances {
            let warnings = inst.log_text().matches("Redis is unreachable").count();
            assert_eq!(warnings, 1, "{}: {warnings} warnings", inst.name);
        }
        // Shared again afterwards: a new key is computed once across the three.
        let (before, failed) = (c.sum("body_runs").await, c.sum("failures").await);
        let _ = tokio::join!(c.report(0, 77, 200), c.report(1, 77, 200), c.report(2, 77, 200));
        c.assert_once(before, failed).await;
        eprintln!(
            "Redis hung for 3 s: {calls} calls, 0 failed; the tier was back {back:?} after the hang began"
        );
        drop(redis);
    }
}

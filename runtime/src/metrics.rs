//! connscope's statistics through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`), with Prometheus names and labels.
//!
//! Nothing is recorded on the hit path: the caches keep counting as they always do, and
//! [`Runtime::export_metrics`] reads their counters and sets the facade's counters to them
//! (`Counter::absolute`). Call it where the exporter renders (a `/metrics` handler) or
//! periodically.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `connscope_cache_hits_total` | `cache`, `scope` | calls answered from the cache |
//! | `connscope_cache_misses_total` | `cache`, `scope` | calls that found no live value |
//! | `connscope_cache_loads_total` | `cache`, `scope` | loader runs (single-flighted misses count once) |
//! | `connscope_cache_load_failures_total` | `cache`, `scope` | loader runs that failed or panicked |
//! | `connscope_cache_evictions_total` | `cache`, `scope`, `cause` | values removed: `expired`, `size`, `explicit`, `replaced`, `session_end`, `shutdown` |
//! | `connscope_cache_releases_total` | `cache`, `scope` | release hooks run |
//! | `connscope_cache_release_failures_total` | `cache`, `scope` | release hooks that failed or panicked |
//! | `connscope_connection_connects_total` | `connection`, `provider`, `scope` | successful connects |
//! | `connscope_connection_reconnects_total` | `connection`, `provider`, `scope` | clients found closed and replaced |
//! | `connscope_connection_closes_total` | `connection`, `provider`, `scope` | clients closed |
//! | `connscope_connection_health_checks_total` | `connection`, `provider`, `scope` | `is_open` calls |
//! | `connscope_connection_retries_total` | `connection`, `provider`, `scope` | `Conn::run` operations retried on a fresh client |
//! | `connscope_connection_rebuilds_total` | `connection`, `provider`, `scope` | clients rebuilt while in use (credentials' expiry, `refresh`, credentials file changed) and swapped in |
//! | `connscope_connection_renewals_total` | `connection`, `provider`, `scope` | clients whose credentials were renewed in place ahead of their expiry (no reconnect) |
//! | `connscope_connection_rebuild_failures_total` | `connection`, `provider`, `scope` | rebuilds or renewals that failed (the old client was kept) |
//! | `connscope_sessions_live` (gauge) | | live sessions |
//! | `connscope_redis_<counter>_total` | `prefix` | with feature `redis`, once the runtime's shared tier started: each counter of [`RedisStats`](crate::redis::RedisStats) (`remote_hits`, `computed`, `waited`, `takeovers`, `stored`, `store_refused`, `failures`, `invalidations_sent`, `invalidations_received`, `outages`, `decode_failures`) |
//! | `connscope_redis_up` (gauge) | `prefix` | 1 while the bus is confirmed within the invalidation bound, else 0 |
//!
//! `cache` is the cached function's (or `Resource`'s) name, with a `module` label for a cached
//! function (its module path); `scope` is `global` or `session`, a session-scoped cache being
//! the sum over every session, including the ones that ended. A connection's own cache appears
//! as `connection<Type>`.
//!
//! A session's counts are read by exports while it lives, and once more after it ended. A
//! session that logged in (`Session::login`, the web login) is remembered from its login on;
//! any other session that starts and ends between two exports is not counted.
//!
//! ```no_run
//! # async fn run(rt: connscope::Runtime) {
//! // With any `metrics` exporter installed, e.g. metrics-exporter-prometheus:
//! // let handle = PrometheusBuilder::new().install_recorder()?;
//! rt.export_metrics();              // before each render
//! // handle.render()
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use ::metrics::{Label, counter, describe_counter, describe_gauge, gauge};

use crate::conn::{Conn, ConnCounters};
use crate::provider::Provider;
use crate::runtime::Runtime;
use crate::scope::Scope;
use crate::session::{Session, SessionId};
use crate::stats::StatsSnapshot;

/// What the exporter remembers per runtime (by id).
static STATES: LazyLock<Mutex<HashMap<u64, State>>> = LazyLock::new(Default::default);

#[derive(Default)]
struct State {
    /// Sessions seen by an export, kept until their end finished, so that what their caches
    /// did up to the end (the releases of the end itself included) is counted.
    sessions: HashMap<SessionId, Session>,
    /// Totals of the session caches of sessions that ended, by cache name.
    ended_sessions: BTreeMap<String, StatsSnapshot>,
    /// Connection handles made so far and not yet folded into `closed_conns`.
    conns: Vec<Tracked>,
    /// Totals of connection handles released and closed.
    closed_conns: BTreeMap<ConnLabels, ConnCounters>,
    /// Size of `conns` at which finished handles are next folded in by `track`.
    sweep_at: usize,
    /// Size of `sessions` at which ended ones are next folded in by `track`.
    session_sweep_at: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ConnLabels {
    connection: Arc<str>,
    provider: String,
    scope: &'static str,
}

struct Tracked {
    labels: ConnLabels,
    /// The handle's counters, and whether it is finished (released and closed: its counters
    /// no longer move).
    read: Box<dyn Fn() -> (ConnCounters, bool) + Send + Sync>,
}

fn states() -> std::sync::MutexGuard<'static, HashMap<u64, State>> {
    STATES.lock().unwrap_or_else(|p| p.into_inner())
}

fn scope_label(scope: Scope) -> &'static str {
    match scope {
        Scope::Global => "global",
        Scope::Session => "session",
    }
}

/// `a::b::C<d::E>` -> `C<E>`: a type name without its module paths.
fn short_type_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut segment = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear();
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

/// Remembers a connection handle of `rt` so that exports count what it does. Called where
/// handles are made (a named connection, a login): never on a hit.
/// A login also remembers its session, so that its counts are exported even if it ends before
/// the next export.
pub(crate) fn track<P: Provider>(rt: &Runtime, conn: &Conn<P>, scope: Scope, login: Option<&Session>) {
    let labels = ConnLabels {
        connection: Arc::from(conn.name()),
        provider: short_type_name(std::any::type_name::<P>()),
        scope: scope_label(scope),
    };
    let conn = conn.clone();
    let read = Box::new(move || (conn.counters(), conn.is_released() && !conn.is_connected()));
    let mut states = states();
    let state = states.entry(rt.id()).or_default();
    state.conns.push(Tracked { labels, read });
    if let Some(session) = login {
        state.sessions.entry(session.id()).or_insert_with(|| session.clone());
        // Likewise, let sessions whose end finished go whenever the map doubled.
        if state.sessions.len() >= state.session_sweep_at {
            // (The session registry's lock is never held while this one is taken.)
            let live: HashSet<SessionId> = rt.sessions().iter().map(Session::id).collect();
            state.fold_ended_sessions(&live);
            state.session_sweep_at = (state.sessions.len() * 2).max(64);
        }
    }
    // Fold finished handles whenever the list doubled, so it follows the live handles even if
    // nothing exports.
    if state.conns.len() >= state.sweep_at {
        state.fold_finished_conns();
        state.sweep_at = (state.conns.len() * 2).max(64);
    }
}

impl State {
    /// Sessions whose end finished (no longer registered, `live` being the registered ones):
    /// their final counts move to the totals of ended sessions, and the session is let go.
    fn fold_ended_sessions(&mut self, live: &HashSet<SessionId>) {
        let ended = &mut self.ended_sessions;
        self.sessions.retain(|id, s| {
            let keep = live.contains(id);
            if !keep {
                s.inner.caches.each_stats(|name, st| ended.entry(name.to_owned()).or_default().add(&st));
            }
            keep
        });
    }

    fn fold_finished_conns(&mut self) {
        let closed = &mut self.closed_conns;
        self.conns.retain(|t| {
            let (counters, finished) = (t.read)();
            if finished {
                add_counters(closed.entry(t.labels.clone()).or_default(), &counters);
            }
            !finished
        });
    }
}

fn add_counters(total: &mut ConnCounters, c: &ConnCounters) {
    total.connects += c.connects;
    total.reconnects += c.reconnects;
    total.closes += c.closes;
    total.health_checks += c.health_checks;
    total.retries += c.retries;
    total.rebuilds += c.rebuilds;
    total.renewals += c.renewals;
    total.rebuild_failures += c.rebuild_failures;
}

impl Runtime {
    /// Sets the [`metrics`](https://docs.rs/metrics) facade's counters to this runtime's
    /// statistics (feature `metrics`): every cache's hits, misses, loads, load failures,
    /// evictions by cause, releases and release failures; every connection's connects,
    /// reconnects, closes, health checks, retries, rebuilds, renewals and rebuild failures; the live sessions. See [`crate::metrics`] for the
    /// names and labels.
    ///
    /// Call it before the exporter renders (or periodically): it reads the counters the caches
    /// keep anyway, so the hit path pays nothing for metrics. Its cost is one pass over the
    /// live sessions' caches. Export one runtime per recorder: two runtimes with the same cache
    /// names would set the same counters.
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn export_metrics(&self) {
        let live = self.sessions();
        let mut caches: BTreeMap<(String, &'static str), StatsSnapshot> = BTreeMap::new();
        let mut conns: BTreeMap<ConnLabels, ConnCounters> = BTreeMap::new();
        {
            let mut states = states();
            let state = states.entry(self.id()).or_default();
            let live_ids: HashSet<SessionId> = live.iter().map(Session::id).collect();
            state.fold_ended_sessions(&live_ids);
            for s in live {
                state.sessions.entry(s.id()).or_insert(s);
            }
            for (name, st) in &state.ended_sessions {
                caches.entry((name.clone(), "session")).or_default().add(st);
            }
            for s in state.sessions.values() {
                s.inner
                    .caches
                    .each_stats(|name, st| caches.entry((name.to_owned(), "session")).or_default().add(&st));
            }
            state.fold_finished_conns();
            conns.clone_from(&state.closed_conns);
            for t in &state.conns {
                add_counters(conns.entry(t.labels.clone()).or_default(), &(t.read)().0);
            }
        }
        self.shared
            .global
            .each_stats(|name, st| caches.entry((name.to_owned(), "global")).or_default().add(&st));

        describe();
        for ((name, scope), s) in caches {
            let (module, name) = split_cache_name(&name);
            let labels = || {
                let mut labels = vec![Label::new("cache", name.clone()), Label::new("scope", scope)];
                if let Some(module) = &module {
                    labels.push(Label::new("module", module.clone()));
                }
                labels
            };
            counter!("connscope_cache_hits_total", labels()).absolute(s.hits);
            counter!("connscope_cache_misses_total", labels()).absolute(s.misses);
            counter!("connscope_cache_loads_total", labels()).absolute(s.loads);
            counter!("connscope_cache_load_failures_total", labels()).absolute(s.load_failures);
            counter!("connscope_cache_releases_total", labels()).absolute(s.releases);
            counter!("connscope_cache_release_failures_total", labels()).absolute(s.release_failures);
            for (cause, n) in [
                ("expired", s.evicted_expired),
                ("size", s.evicted_size),
                ("explicit", s.evicted_explicit),
                ("replaced", s.evicted_replaced),
                ("session_end", s.evicted_session_end),
                ("shutdown", s.evicted_shutdown),
            ] {
                let mut labels = labels();
                labels.push(Label::new("cause", cause));
                counter!("connscope_cache_evictions_total", labels).absolute(n);
            }
        }
        for (l, c) in conns {
            let labels = || {
                vec![
                    Label::new("connection", l.connection.to_string()),
                    Label::new("provider", l.provider.clone()),
                    Label::new("scope", l.scope),
                ]
            };
            counter!("connscope_connection_connects_total", labels()).absolute(c.connects);
            counter!("connscope_connection_reconnects_total", labels()).absolute(c.reconnects);
            counter!("connscope_connection_closes_total", labels()).absolute(c.closes);
            counter!("connscope_connection_health_checks_total", labels()).absolute(c.health_checks);
            counter!("connscope_connection_retries_total", labels()).absolute(c.retries);
            counter!("connscope_connection_rebuilds_total", labels()).absolute(c.rebuilds);
            counter!("connscope_connection_renewals_total", labels()).absolute(c.renewals);
            counter!("connscope_connection_rebuild_failures_total", labels()).absolute(c.rebuild_failures);
        }
        gauge!("connscope_sessions_live").set(self.session_count() as f64);
        #[cfg(feature = "redis")]
        self.export_redis_metrics();
    }

    /// The shared tier's counters and state (nothing before the tier started).
    #[cfg(feature = "redis")]
    fn export_redis_metrics(&self) {
        let (Some(stats), Some(prefix)) = (self.redis_stats(), self.redis_prefix()) else { return };
        let labels = || vec![Label::new("prefix", prefix.clone())];
        for (name, help, n) in [
            ("remote_hits", "Local misses answered from Redis.", stats.remote_hits),
            ("computed", "Local misses computed here (nothing in Redis).", stats.computed),
            ("waited", "Local misses that waited for another instance.", stats.waited),
            ("takeovers", "Loads taken over from an instance whose lock expired.", stats.takeovers),
            ("stored", "Values computed here and stored in Redis.", stats.stored),
            ("store_refused", "Values not stored: an invalidation came first.", stats.store_refused),
            ("failures", "Redis commands that failed or timed out.", stats.failures),
            ("invalidations_sent", "Invalidations and clears broadcast.", stats.invalidations_sent),
            (
                "invalidations_received",
                "Invalidations and clears from other instances.",
                stats.invalidations_received,
            ),
            ("outages", "Times Redis went away.", stats.outages),
            (
                "decode_failures",
                "Stored values of another encoding, treated as missing.",
                stats.decode_failures,
            ),
        ] {
            let name = format!("connscope_redis_{name}_total");
            describe_counter!(name.clone(), help);
            counter!(name, labels()).absolute(n);
        }
        describe_gauge!(
            "connscope_redis_up",
            "1 while the Redis bus is confirmed within the invalidation bound."
        );
        let up = stats.state == Some(crate::redis::RedisState::Up);
        gauge!("connscope_redis_up", labels()).set(if up { 1.0 } else { 0.0 });
    }
}

/// A cache's `module` and `cache` labels: `app::queries::top_customers` (a cached function's
/// resource name is its module path) is `top_customers` in module `app::queries`; a
/// connection's cache is `connection<Type>`, without module paths.
fn split_cache_name(name: &str) -> (Option<String>, String) {
    if name.starts_with("connection<") {
        return (None, short_type_name(name));
    }
    match name.rsplit_once("::") {
        Some((module, last)) => (Some(module.to_owned()), last.to_owned()),
        None => (None, name.to_owned()),
    }
}

/// Help texts (the recorder keeps the first; cheap to repeat).
fn describe() {
    describe_counter!("connscope_cache_hits_total", "Calls answered from the cache.");
    describe_counter!("connscope_cache_misses_total", "Calls that found no live value in the cache.");
    describe_counter!("connscope_cache_loads_total", "Loader runs (a single-flighted miss counts once).");
    describe_counter!(
        "connscope_cache_load_failures_total",
        "Loader runs that returned an error or panicked."
    );
    describe_counter!("connscope_cache_evictions_total", "Values removed from the cache, by cause.");
    describe_counter!("connscope_cache_releases_total", "Release hooks that ran.");
    describe_counter!("connscope_cache_release_failures_total", "Release hooks that failed or panicked.");
    describe_counter!("connscope_connection_connects_total", "Successful connects.");
    describe_counter!("connscope_connection_reconnects_total", "Clients found closed and replaced.");
    describe_counter!("connscope_connection_closes_total", "Clients closed.");
    describe_counter!("connscope_connection_health_checks_total", "Health checks (is_open calls).");
    describe_counter!(
        "connscope_connection_retries_total",
        "Operations retried once on a fresh client (Conn::run)."
    );
    describe_counter!(
        "connscope_connection_rebuilds_total",
        "Clients rebuilt while in use (credentials' expiry, refresh period, credentials file changed)."
    );
    describe_counter!(
        "connscope_connection_renewals_total",
        "Clients whose credentials were renewed in place ahead of their expiry (no reconnect)."
    );
    describe_counter!(
        "connscope_connection_rebuild_failures_total",
        "Rebuilds or renewals that failed (the old client was kept and the attempt retried)."
    );
    describe_gauge!("connscope_sessions_live", "Live sessions.");
}

#[cfg(test)]
mod tests {
    use super::{short_type_name, split_cache_name};

    #[test]
    fn a_cached_function_is_labelled_by_its_name_and_module() {
        assert_eq!(
            split_cache_name("app::queries::top_customers"),
            (Some("app::queries".into()), "top_customers".into())
        );
        assert_eq!(split_cache_name("squares"), (None, "squares".into()));
        assert_eq!(split_cache_name("connection<a::B>"), (None, "connection<B>".into()));
    }

    #[test]
    fn type_names_lose_their_module_paths() {
        assert_eq!(
            short_type_name("connection<connscope_runtime::sql::settings::SqlDb<sqlx_sqlite::Sqlite>>"),
            "connection<SqlDb<Sqlite>>"
        );
        assert_eq!(short_type_name("app::Warehouse"), "Warehouse");
        assert_eq!(short_type_name("(a::B, c::D)"), "(B, D)");
    }
}

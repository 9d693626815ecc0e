//! The swap clock: when each rebuild of a connection started, swapped its client in and closed
//! the old one, read from connscope's own events ([`SwapClock`], a `tracing` layer); and the
//! tail latency of queries by phase of a swap ([`Phases`]). Shared by the rotating-credentials
//! soaks (`suite/tests/credentials.rs`) and the `rotation` bench, so both time a swap alike.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// What a connection's rebuild did, as connscope logs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The replacement started connecting ("rebuilding the connection …").
    Started,
    /// The replacement was swapped in ("connection rebuilt …").
    Swapped,
    /// A client was closed ("closed").
    Closed,
}

fn marks() -> &'static Mutex<Vec<(Instant, String, Mark)>> {
    static MARKS: OnceLock<Mutex<Vec<(Instant, String, Mark)>>> = OnceLock::new();
    MARKS.get_or_init(Default::default)
}

/// The layer that timestamps connscope's rebuild events, by connection name.
pub struct SwapClock;

#[derive(Default)]
struct Fields {
    message: String,
    connection: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "connection" => self.connection = format!("{value:?}"),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "connection" => self.connection = value.to_owned(),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SwapClock {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("connscope") {
            return;
        }
        let now = Instant::now();
        let mut f = Fields::default();
        event.record(&mut f);
        let mark = if f.message.starts_with("connscope: rebuilding the connection")
            && !f.message.contains("failed")
        {
            Mark::Started
        } else if f.message.starts_with("connscope: connection rebuilt") {
            Mark::Swapped
        } else if f.message == "connscope: closed" {
            Mark::Closed
        } else {
            return;
        };
        marks().lock().unwrap().push((now, f.connection, mark));
    }
}

/// One swap of a connection: the replacement started connecting, was swapped in, and the old
/// client was closed (the next close of that connection after the swap).
#[derive(Clone, Copy, Debug)]
pub struct Swap {
    pub started: Instant,
    pub swapped: Instant,
    pub closed: Instant,
}

/// The swaps of connection `name` seen so far (a swap whose old client is not closed yet ends now).
pub fn swaps_of(name: &str) -> Vec<Swap> {
    let marks: Vec<_> =
        marks().lock().unwrap().iter().filter(|(_, c, _)| c == name).map(|&(t, _, m)| (t, m)).collect();
    let mut swaps = Vec::new();
    let mut started = None;
    for (i, &(t, m)) in marks.iter().enumerate() {
        match m {
            Mark::Started => started = Some(t),
            Mark::Swapped => {
                let closed = marks[i..]
                    .iter()
                    .find(|&&(_, m)| m == Mark::Closed)
                    .map_or_else(Instant::now, |&(t, _)| t);
                swaps.push(Swap { started: started.take().unwrap_or(t), swapped: t, closed });
            }
            Mark::Closed => {}
        }
    }
    swaps
}

/// Tail latency of queries by phase of a swap. *During a swap* is the window from the start of
/// the replacement's connect to the old client's close; it is split in *connecting* (start to
/// swap) and *draining* (swap to the old client's close). A query counts in a phase when its own
/// run overlaps it (connecting first).
#[derive(Debug, Default)]
pub struct Phases {
    pub outside: Vec<Duration>,
    pub connecting: Vec<Duration>,
    pub draining: Vec<Duration>,
}

impl Phases {
    pub fn of(samples: &[(Instant, Duration)], swaps: &[Swap]) -> Phases {
        let mut p = Phases::default();
        let overlaps = |t0: Instant, d: Duration, from: Instant, to: Instant| t0 <= to && t0 + d >= from;
        for &(t0, d) in samples {
            if swaps.iter().any(|s| overlaps(t0, d, s.started, s.swapped)) {
                p.connecting.push(d)
            } else if swaps.iter().any(|s| overlaps(t0, d, s.swapped, s.closed)) {
                p.draining.push(d)
            } else {
                p.outside.push(d)
            }
        }
        for v in [&mut p.outside, &mut p.connecting, &mut p.draining] {
            v.sort_unstable();
        }
        p
    }

    /// All the queries during a swap, sorted.
    pub fn during(&self) -> Vec<Duration> {
        let mut v: Vec<_> = self.connecting.iter().chain(&self.draining).copied().collect();
        v.sort_unstable();
        v
    }

    /// p99 during a swap over p99 outside one.
    pub fn ratio(&self) -> f64 {
        pct(&self.during(), 99).as_secs_f64() / pct(&self.outside, 99).as_secs_f64().max(1e-9)
    }

    /// The figures, one line.
    pub fn summary(&self, swaps: &[Swap]) -> String {
        let line = |v: &[Duration]| {
            format!(
                "{} queries, p50 {:?} p90 {:?} p99 {:?} max {:?}",
                v.len(),
                pct(v, 50),
                pct(v, 90),
                pct(v, 99),
                v.last().copied().unwrap_or_default()
            )
        };
        let mean = |f: &dyn Fn(&Swap) -> Duration| {
            swaps.iter().map(f).sum::<Duration>() / (swaps.len().max(1) as u32)
        };
        // Slowed queries whatever the window's length: slower than 4x the p99 outside, per swap.
        let slow = 4 * pct(&self.outside, 99);
        let slowed = self.during().iter().filter(|&&d| d > slow).count() as f64 / swaps.len().max(1) as f64;
        format!(
            "p99 during a swap / outside = {:.2} (target <= 1.5); {slowed:.1} queries per swap slower than \
             {slow:?} (4x p99 outside); during a swap (replacement's connect start \
             to old client's close): {}; of which connecting: {}; draining and closing the old: {}; outside: {}; \
             {} swaps, connecting {:?} and draining/closing {:?} on average",
            self.ratio(),
            line(&self.during()),
            line(&self.connecting),
            line(&self.draining),
            line(&self.outside),
            swaps.len(),
            mean(&|s| s.swapped - s.started),
            mean(&|s| s.closed - s.swapped),
        )
    }
}

/// The `q`th percentile of sorted `v`.
pub fn pct(v: &[Duration], q: usize) -> Duration {
    v.get((v.len() * q / 100).min(v.len().saturating_sub(1))).copied().unwrap_or_default()
}

//! `max_entries` as exact LRU: random sequences of gets and invalidates, one at a time, against
//! a model list ordered by use. Each get must be a hit exactly when the model holds its key, and
//! the values released before shutdown must be exactly the model's victims and invalidated ones.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use connscope::{Resource, Scope};

use super::log::{Log, Origin};
use super::{HookKind, Rng, Val, release_hook};

/// Runs the LRU sequence of `seed`; `Err` holds the trace up to the first difference.
pub fn check_seed(seed: u64) -> Result<(), String> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a Tokio runtime");
    tokio.block_on(run(seed))
}

async fn run(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
    let max = rng.between(1, 4);
    let keys = rng.between(max + 1, max + 3) as u8;
    let steps = rng.between(5, 60);
    let log = Arc::new(Log::new());
    let rt = crate::support::runtime().build();
    let res: &'static Resource<u8, Val> =
        Box::leak(Box::new(Resource::new("lru", Scope::Global, None, Some(max), Some(release_hook))));
    let session = rt.session();
    let mut trace = format!("LRU seed {seed}: max_entries {max}, keys 0..{keys}\n");
    // Most recently used first; each entry: (key, serial).
    let mut model: Vec<(u8, u64)> = Vec::new();
    let mut gone = BTreeSet::new();
    for step in 0..steps {
        let key = rng.below(u64::from(keys)) as u8;
        if rng.chance(15) {
            let found = session.run(res.invalidate(&key)).await;
            let expected = model.iter().position(|e| e.0 == key);
            trace.push_str(&format!("step {step}: invalidate {key} -> found {found}\n"));
            if found != expected.is_some() {
                return Err(format!("{trace}=> lru-order: the model {} key {key}\n", holds(expected)));
            }
            if let Some(i) = expected {
                gone.insert(model.remove(i).1);
            }
            continue;
        }
        let loaded = AtomicU64::new(0);
        let loader = async {
            let serial = log.new_value(Origin::Load(0), (0, None), key);
            log.loaded(serial);
            loaded.store(serial, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(Val { serial, hook: HookKind::Quick, log: Arc::clone(&log) })
        };
        let got = session.run(res.try_get_with(key, loader)).await.map_err(|e| format!("{e:?}"))?;
        let hit = loaded.load(Ordering::SeqCst) == 0;
        let expected = model.iter().position(|e| e.0 == key);
        trace.push_str(&format!(
            "step {step}: get {key} -> {} #{}\n",
            if hit { "hit" } else { "loaded" },
            got.serial
        ));
        if hit != expected.is_some() {
            return Err(format!(
                "{trace}=> lru-order: the model {} key {key} (order, most recent first: {:?})\n",
                holds(expected),
                model.iter().map(|e| e.0).collect::<Vec<_>>()
            ));
        }
        let entry = match expected {
            Some(i) => model.remove(i),
            None => (key, got.serial),
        };
        model.insert(0, entry);
        if model.len() as u64 > max
            && let Some(victim) = model.pop()
        {
            trace.push_str(&format!("         model evicts key {} (#{})\n", victim.0, victim.1));
            gone.insert(victim.1);
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let released: BTreeSet<u64> =
        log.with(|l| l.values.iter().filter(|(_, v)| !v.hook_starts.is_empty()).map(|(s, _)| *s).collect());
    let report = rt.shutdown().await;
    if released != gone {
        return Err(format!(
            "{trace}=> lru-order: released before shutdown {released:?}, the model says {gone:?}\n"
        ));
    }
    let twice = log.with(|l| l.values.values().filter(|v| v.hook_starts.len() != 1).count());
    if twice != 0 || !report.is_ok() {
        return Err(format!(
            "{trace}=> hook-twice: {twice} values not released exactly once; report {report:?}\n"
        ));
    }
    Ok(())
}

fn holds(position: Option<usize>) -> &'static str {
    if position.is_some() { "holds" } else { "does not hold" }
}

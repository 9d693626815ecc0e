//! The `tracing` events the README lists (session start and end, release, connect, close,
//! shutdown), captured through a subscriber.
//!
//! A test binary of its own, with one test: the subscriber is the thread's default
//! (`set_default`), and a callsite that another test's thread registers at the same moment can
//! miss it (tracing's interest cache), which made this flaky beside other tests.

mod support;

use std::sync::{Arc, Mutex};

use connscope::{Resource, Scope};
// ---------------------------------------------------------------------------------------------

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

static TRACED: Resource<u32, u32> =
    Resource::new("traced_resource", Scope::Session, None, None, Some(|_| Box::pin(async { Ok(()) })));

/// Current-thread runtime: every task runs on this thread, under the thread's subscriber.
#[tokio::test(start_paused = true)]
async fn sessions_releases_and_connections_emit_tracing_events() {
    use tracing_subscriber::util::SubscriberInitExt;
    let lines = Lines::default();
    let writer = lines.clone();
    let _guard = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();

    let rt = support::runtime().connection_setting("wh", "label", "traced").build();
    let s = rt.session();
    let id = s.id().to_string();
    s.run(TRACED.get_with(1, async { 1 })).await.unwrap();
    let conn = rt.connection::<support::Warehouse>("wh").await.unwrap();
    drop(conn.get().await.unwrap());
    let ended = s.end().await;
    assert_eq!((ended.released, ended.is_ok()), (1, true), "{ended:?}");
    let shut = rt.shutdown().await;
    assert_eq!((shut.released, shut.is_ok()), (1, true), "{shut:?}");

    let text = lines.text();
    let line = |words: &[&str]| text.lines().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(line(&["connscope: session started", &id]), "{text}");
    assert!(line(&["connscope: released", "traced_resource", "SessionEnd"]), "{text}");
    assert!(line(&["connscope: session ended", &id, "released=1"]), "{text}");
    assert!(line(&["connscope: connected", "wh"]), "{text}");
    assert!(line(&["connscope: closed", "wh"]), "{text}");
    assert!(line(&["connscope: runtime shut down", "released=1"]), "{text}");
}

//! Where background work runs: the caller's Tokio runtime when there is one, else a small
//! runtime of connscope's own on a dedicated thread. Releases, session ends and maintenance
//! therefore never depend on the Tokio runtime that happened to touch connscope first staying
//! alive (a test suite gives every `#[tokio::test]` its own runtime).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The current Tokio runtime, else connscope's own.
pub(crate) fn handle() -> Handle {
    Handle::try_current().unwrap_or_else(|_| own())
}

/// connscope's own runtime: one thread, started on first use, alive for the whole process.
pub(crate) fn own() -> Handle {
    static OWN: OnceLock<Handle> = OnceLock::new();
    OWN.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("connscope-background".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("connscope: cannot build the background Tokio runtime");
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            })
            .expect("connscope: cannot start the background thread");
        rx.recv().expect("connscope: the background thread did not start")
    })
    .clone()
}

/// Spawns `fut` on [`handle`].
pub(crate) fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    handle().spawn(fut)
}

//! A multi-user dashboard on axum: a login page generated from the provider, pages gated until
//! the user is logged in, a logout button, and two cached queries (one per user session, one
//! global) with their cache statistics.
//!
//! ```text
//! cargo run --example dashboard --features axum,metrics
//! ```
//!
//! It prints the address (127.0.0.1, port `PORT` or 3000). By default it runs on a SQLite file
//! with sample data (no server needed); log in as alice / alice-pw, bob / bob-pw or
//! carol / carol-pw. With `DASHBOARD_DATABASE_URL=postgres://app@host/db` (and
//! `--features axum,metrics,postgres`) it runs on PostgreSQL and users log in as their own
//! roles. `/metrics` serves connscope's statistics for Prometheus. Ctrl-C (or SIGTERM) stops
//! it gracefully: requests in flight finish, the runtime shuts down (every session ended, every
//! connection closed) and the SQLite file is removed.

// The tests use parts of the app (`user_connections`) that `main` does not.
#[allow(dead_code)]
mod app;

use std::error::Error;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();

    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|_| format!("PORT must be a port number, not `{p}`"))?,
        Err(_) => 3000,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;

    let sqlite = std::env::temp_dir().join(format!("connscope-dashboard-{}.sqlite", addr.port()));
    let database = app::Database::from_env(sqlite)?;
    let postgres = !matches!(database, app::Database::Sqlite(_));
    let dashboard = app::app(database).await?;

    println!("connscope dashboard on {}", dashboard.description);
    println!("listening on http://{addr}/");
    if postgres {
        println!("log in as a database role that may connect, e.g. after (as a superuser):");
        println!("  create role alice login password 'alice-pw';  create role bob login password 'bob-pw';");
    } else {
        let users: Vec<String> = app::DEMO_USERS.iter().map(|(u, p)| format!("{u} / {p}")).collect();
        println!("demo users: {}", users.join(", "));
    }
    println!("metrics: http://{addr}/metrics; Ctrl-C stops");
    // With the peer's address, failed logins are also throttled per client, not only per user.
    let service = dashboard.router.clone().into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(stop_signal()).await?;

    println!("shutting down…");
    let report = dashboard.shutdown().await;
    println!("runtime shut down: {} cached value(s) released, connections closed", report.released);
    for failure in &report.failures {
        eprintln!("  a release failed: {failure:?}");
    }
    let file = dashboard.file.clone();
    drop(dashboard); // removes the SQLite file
    if let Some(file) = file {
        println!("removed {}", file.display());
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM (what `kill` and service managers send).
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

//! Secrets never leave: not through a configuration error (a TOML syntax error, a secret of
//! the wrong type), a connection's id, a URL in `Debug` or an error, a log line, or memory
//! freed without being wiped. And `$CONNSCOPE_SECRETS` names the secrets file.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use connscope::{Connection, Error, FormValues, Provider, Runtime, SECRETS_FILE_VAR, Secret};
use support::{Warehouse, secrets};

/// A runtime reading `file` and no process environment.
fn rt(file: &Path) -> Runtime {
    Runtime::builder().secrets_file(file).env_vars(Vec::<(String, String)>::new()).build()
}

/// Everything a user could see of an error: `Display` and `Debug`.
fn all_of(err: &Error) -> String {
    format!("{err} | {err:?} | {err:#?}")
}

// ---------------------------------------------------------------------------------------------
// A TOML syntax error says where, and what the parser says, never the file's text.

#[tokio::test]
async fn a_syntax_error_in_the_secrets_file_never_quotes_the_line() {
    // An unterminated string: the broken line holds the password.
    let file = secrets("[connections.warehouse]\nlabel = \"x\"\npassword = \"hunter2-unterminated\n");
    let err = rt(&file.0).connection::<Warehouse>("warehouse").await.unwrap_err();
    let text = all_of(&err);
    assert!(matches!(err, Error::Config { .. }), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("line 3, column 33") && text.contains("invalid basic string"), "{text}");

    // An unquoted value: the parser points at the password itself.
    let file = secrets("[connections.warehouse]\nlabel = \"x\"\npassword = hunter2-bare\n");
    let err = rt(&file.0).connection::<Warehouse>("warehouse").await.unwrap_err();
    let text = all_of(&err);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("line 3, column 12") && text.contains("string values must be quoted"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// A secret of the wrong type is refused without its value.

/// A provider whose password is a secret by attribute: a plain `String`, read by serde's own
/// `String` (whose messages quote the value), plus a fixed `Secret`.
#[derive(Connection, serde::Deserialize)]
#[connection(scope = "global", name = "vault")]
struct Vault {
    #[connection(fixed)]
    host: String,
    user: String,
    #[connection(secret)]
    password: String,
    #[connection(fixed)]
    #[serde(default)]
    backup: Option<Secret>,
}

impl Provider for Vault {
    type Raw = ();
    type Error = std::io::Error;
    async fn connect(&self) -> Result<(), std::io::Error> {
        let _ = (&self.host, &self.user, &self.password, &self.backup);
        Err(std::io::Error::other("the vault refused the connection"))
    }
    async fn is_open(&self, _raw: &()) -> bool {
        true
    }
}

fn vault_rt(password: impl Into<toml::Value>, backup: impl Into<toml::Value>) -> Runtime {
    support::runtime()
        .connection_setting("vault", "host", "vault.internal")
        .connection_setting("vault", "user", "ada")
        .connection_setting("vault", "password", password)
        .connection_setting("vault", "backup", backup)
        .build()
}

#[tokio::test]
async fn a_secret_of_the_wrong_type_in_config_is_refused_without_its_value() {
    // A `Secret` field (here `Option<Secret>`), in the secrets file.
    let file = secrets("[connections.warehouse]\nlabel = \"x\"\npassword = 918273645\n");
    let err = rt(&file.0).connection::<Warehouse>("warehouse").await.unwrap_err();
    let text = all_of(&err);
    assert!(matches!(err, Error::Config { .. }), "{text}");
    assert!(!text.contains("918273645"), "{text}");
    assert!(text.contains("password") && text.contains("expected a string"), "{text}");

    // A `#[connection(secret)]` String field: serde's message would quote the value.
    for bad in [toml::Value::from(918273645), toml::Value::from(9182736.45), toml::Value::from(true)] {
        let err = vault_rt(bad, "fine").connection::<Vault>("vault").await.unwrap_err();
        let text = all_of(&err);
        assert!(!text.contains("918273645") && !text.contains("9182736"), "{text}");
        assert!(text.contains("`password` is not accepted"), "{text}");
    }

    // A fixed `Secret` field.
    let err = vault_rt("fine", 918273645).connection::<Vault>("vault").await.unwrap_err();
    let text = all_of(&err);
    assert!(!text.contains("918273645") && text.contains("backup"), "{text}");

    // A field that is not secret is still named with serde's reason.
    let file = secrets("[connections.warehouse]\nlabel = \"x\"\nport = 99999\n");
    let err = rt(&file.0).connection::<Warehouse>("warehouse").await.unwrap_err();
    assert!(err.to_string().contains("`port`: invalid value: integer `99999`"), "{err}");
}

#[test]
fn a_secret_of_the_wrong_type_in_a_login_form_is_refused_without_its_value() {
    let values = FormValues::submitted([("user", "ada"), ("password", "pw")])
        .fix("host", "vault.internal")
        .fix("backup", 918273645);
    let err = Vault::from_form(&values).err().unwrap();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("918273645"), "{text}");
    assert!(text.contains("`backup`"), "{text}");
}

#[cfg(feature = "sqlite")]
#[test]
fn a_sql_password_of_the_wrong_type_is_refused_without_its_value() {
    use connscope::sql::SqliteDb;
    let section: toml::Table = "url = 'sqlite::memory:'\npassword = 918273645".parse().unwrap();
    let err = SqliteDb::from_form(&FormValues::new().fix_all(section)).err().unwrap();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("918273645") && text.contains("`password`"), "{text}");
}

#[test]
fn an_environment_override_of_the_wrong_type_is_not_quoted() {
    let file = secrets("[connections.warehouse]\nlabel = \"x\"\nport = 5432\n");
    let rt = Runtime::builder()
        .secrets_file(&file.0)
        .env_vars([("CONNSCOPE__WAREHOUSE__PORT".to_owned(), "hunter2".to_owned())])
        .build();
    let err = block_on(rt.connection::<Warehouse>("warehouse")).unwrap_err();
    let text = all_of(&err);
    assert!(!text.contains("hunter2") && text.contains("expected an integer"), "{text}");
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

// ---------------------------------------------------------------------------------------------
// A named connection's id is no oracle for its password.

/// The id the settings would have as an unkeyed hash (the digest before this fix): a
/// `DefaultHasher` over the settings' TOML text, then over (type, name, digest).
fn unkeyed_id<P: 'static>(name: &str, settings: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash, Hasher};
    let table: toml::Table = settings.parse().unwrap();
    let mut h = DefaultHasher::new();
    table.to_string().hash(&mut h);
    let fingerprint = h.finish();
    BuildHasherDefault::<DefaultHasher>::default().hash_one((std::any::TypeId::of::<P>(), name, fingerprint))
        | 1 << 63
}

fn id_number(id: connscope::ConnId) -> u64 {
    let text = format!("{id:?}");
    text.trim_start_matches("ConnId(").trim_end_matches(')').parse().unwrap()
}

#[tokio::test]
async fn a_named_connection_id_is_keyed_per_process() {
    let settings = "label = \"id-test\"\npassword = \"hunter2\"\n";
    let file = secrets(&format!("[connections.warehouse]\n{settings}"));
    let (rt1, rt2) = (rt(&file.0), rt(&file.0));
    let a = rt1.connection::<Warehouse>("warehouse").await.unwrap();
    let b = rt2.connection::<Warehouse>("warehouse").await.unwrap();
    assert_eq!(a.id(), b.id(), "same type, name and settings: the same id within the process");

    // Anyone who sees the id cannot test password guesses against it offline: it is not the
    // plain hash of the settings.
    assert_ne!(id_number(a.id()), unkeyed_id::<Warehouse>("warehouse", settings));

    // It still tells settings apart.
    let other = secrets("[connections.warehouse]\nlabel = \"id-test\"\npassword = \"hunter3\"\n");
    let c = rt(&other.0).connection::<Warehouse>("warehouse").await.unwrap();
    assert_ne!(c.id(), a.id());
    assert_eq!(rt1.shutdown().await.released, 1);
    assert_eq!(rt2.shutdown().await.released, 1);
}

// ---------------------------------------------------------------------------------------------
// `$CONNSCOPE_SECRETS` names the secrets file.

#[test]
fn the_secrets_file_variable_names_the_file() {
    const CHILD: &str = "CONNSCOPE_TEST_SECRETS_VARIABLE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // The child process: the variable was set before it started (no `set_var` in a
        // multi-threaded test binary).
        block_on(async {
            let rt = Runtime::builder().env_vars(Vec::<(String, String)>::new()).build();
            let c = rt.connection::<Warehouse>("warehouse").await.unwrap();
            assert_eq!(c.provider().label, "from-the-variable");
            assert_eq!(rt.shutdown().await.released, 1);
            // A file given in code wins over the variable.
            let given = Runtime::builder()
                .secrets_file("/nonexistent/given-in-code.toml")
                .env_vars(Vec::<(String, String)>::new())
                .build();
            let err = given.connection::<Warehouse>("warehouse").await.unwrap_err();
            assert!(err.to_string().contains("given-in-code.toml"), "{err}");
        });
        return;
    }
    let file = secrets("[connections.warehouse]\nlabel = \"from-the-variable\"\n");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "the_secrets_file_variable_names_the_file", "--test-threads=1"])
        .env(SECRETS_FILE_VAR, &file.0)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}\n{stderr}");
}

// ---------------------------------------------------------------------------------------------
// A secret is wiped before its memory is freed.

/// The system allocator, zeroing each block it hands out (so every byte of a block is
/// initialized) and, while armed, checking each block it frees for the canaries below.
struct Watch;

static ARMED: AtomicBool = AtomicBool::new(false);
static FREED_SECRET: AtomicUsize = AtomicUsize::new(0);
static FREED_CONTROL: AtomicUsize = AtomicUsize::new(0);
const SECRET_CANARY: &str = "canary-secret-5f1e9a77c3d2";
const CONTROL_CANARY: &str = "canary-control-0b8d24e6aa1";

fn holds(block: &[u8], canary: &str) -> bool {
    block.windows(canary.len()).any(|w| w == canary.as_bytes())
}

unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(SeqCst) && layout.size() >= SECRET_CANARY.len() {
            // SAFETY: the block is live until the call below, and `alloc` initialized it.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if holds(block, SECRET_CANARY) {
                FREED_SECRET.fetch_add(1, SeqCst);
            }
            if holds(block, CONTROL_CANARY) {
                FREED_CONTROL.fetch_add(1, SeqCst);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    // `realloc` is the default: a new block, a copy, and `dealloc` of the old one (checked).
}

#[global_allocator]
static ALLOCATOR: Watch = Watch;

#[test]
fn a_secret_is_wiped_before_its_memory_is_freed() {
    ARMED.store(true, SeqCst);
    // The watch sees an unwiped value freed.
    drop(std::hint::black_box(String::from(CONTROL_CANARY)));
    assert!(FREED_CONTROL.load(SeqCst) >= 1, "the allocator watch works");

    // A secret made from a String with spare capacity (as a parser hands them out), used,
    // then dropped; and a forgotten one.
    let mut text = String::with_capacity(64);
    text.push_str(SECRET_CANARY);
    let secret = Secret::new(text);
    assert_eq!(secret.expose().len(), SECRET_CANARY.len());
    drop(std::hint::black_box(secret.clone()));
    drop(std::hint::black_box(secret));
    let mut forgotten = Secret::new(SECRET_CANARY);
    forgotten.forget();
    assert!(forgotten.is_empty());

    // One read from configuration.
    let mut value = String::with_capacity(64);
    value.push_str(SECRET_CANARY);
    let read: Secret = toml::Value::String(value).try_into().unwrap();
    drop(std::hint::black_box(read));
    ARMED.store(false, SeqCst);
    assert_eq!(FREED_SECRET.load(SeqCst), 0, "a secret's bytes were freed without being wiped");
}

// ---------------------------------------------------------------------------------------------
// A secret never reaches a log line, nor a connection URL's `Debug` or error.

#[cfg(feature = "sqlite")]
mod logs {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use connscope::sql::SqliteDb;
    use tracing_subscriber::fmt::MakeWriter;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[tokio::test]
    async fn a_connect_failure_logs_no_secret() {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        // The password is in the settings, in the URL's user info (with a `/`) and in its query.
        let url = "sqlite://ada:hunter2/url@localhost/connscope-no-such.db?mode=ro&password=hunter2-query";
        let rt = super::support::runtime()
            .connection_setting("ledger", "url", url)
            .connection_setting("ledger", "password", "hunter2-field")
            .build();
        let conn = rt.connection::<SqliteDb>("ledger").await.unwrap();
        tracing::info!(provider = ?conn.provider(), conn = ?conn, "got the connection");
        let err = conn.query("select 1").fetch_all::<(i64,)>().await.unwrap_err();
        // What an app does with an error: log it, both ways.
        tracing::error!(error = %err, details = ?err, "query failed");
        assert!(rt.shutdown().await.is_ok());

        let text = logs.text();
        assert!(text.contains("query failed") && text.contains("got the connection"), "{text}");
        assert!(text.contains("password=***"), "the URL is shown, redacted: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

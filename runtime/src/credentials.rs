//! Credentials that rotate: the [`Credentials`] trait (a source asked on *every* new connect),
//! what it returns ([`Fetched`]: a user, a password or token as a [`Secret`], an optional
//! expiry) and the sources connscope ships ([`CredentialSource`]: a command, a file re-read on
//! each fetch, an environment variable, a closure or async fn given in code).
//!
//! Nothing here ever prints a password: [`Fetched`] and [`CredentialSource`] show only what
//! kind of source they are, and [`CredentialsError`] says what failed without quoting output.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::secrets::Secret;
use crate::watch::{FileStamp, Seen};

/// What a credential source returns: the password or token, optionally the user it belongs to
/// (a Vault dynamic secret rotates the user name too) and optionally when it stops working.
#[derive(Clone)]
#[non_exhaustive]
pub struct Fetched {
    /// The user, over the connection's own `user` setting (`None`: keep the setting's).
    pub user: Option<String>,
    /// The password or token.
    pub password: Secret,
    /// When the credentials stop working (`None`: the connection's `credentials_lifetime`
    /// setting decides, else never).
    pub expires_at: Option<Instant>,
    /// The file these credentials were read from (the `file` source): a client built with them
    /// is rebuilt when the file changes.
    pub(crate) stamp: Option<FileStamp>,
}

impl Fetched {
    /// A password (or token) with no user of its own and no expiry.
    pub fn new(password: impl Into<Secret>) -> Self {
        Fetched { user: None, password: password.into(), expires_at: None, stamp: None }
    }

    /// The user these credentials belong to.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The credentials stop working `lifetime` from now (an IAM token: 15 minutes).
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_at = Some(Instant::now() + lifetime);
        self
    }

    /// The credentials stop working at `at`.
    pub fn expires_at(mut self, at: Instant) -> Self {
        self.expires_at = Some(at);
        self
    }
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field("user", &self.user)
            .field("password", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a credential source could not give credentials. Its message names the source (the
/// command's program, the file, the variable) and what went wrong, never a secret: a command's
/// output and a file's content are not quoted.
#[derive(Debug, thiserror::Error)]
#[error("credentials from {source_name}: {reason}")]
pub struct CredentialsError {
    source_name: String,
    reason: String,
}

impl CredentialsError {
    /// An error of source `source_name` (e.g. "a closure"), for `reason` (which must not
    /// quote a secret).
    pub fn new(source_name: impl Into<String>, reason: impl fmt::Display) -> Self {
        CredentialsError { source_name: source_name.into(), reason: reason.to_string() }
    }
}

/// A source of credentials, asked for every new pool and again ahead of every expiry (an
/// answer is never used past its own expiry).
///
/// ```
/// use connscope::{Credentials, CredentialsError, Fetched};
///
/// /// An IAM-like token: a fresh one per fetch, valid 15 minutes.
/// struct Token;
/// impl Credentials for Token {
///     async fn fetch(&self) -> Result<Fetched, CredentialsError> {
///         let token = "generated-token".to_string(); // e.g. an RDS auth token signer
///         Ok(Fetched::new(token).expires_in(std::time::Duration::from_secs(15 * 60)))
///     }
/// }
/// ```
pub trait Credentials: Send + Sync + 'static {
    /// Fresh credentials. Called for every new pool (or client), ahead of every expiry (the
    /// answer is given to the pool in place, or a new pool is opened for another user), and
    /// again once when a connect is rejected for authentication.
    fn fetch(&self) -> impl Future<Output = Result<Fetched, CredentialsError>> + Send;
}

type BoxFetch<'a> = Pin<Box<dyn Future<Output = Result<Fetched, CredentialsError>> + Send + 'a>>;

trait DynCredentials: Send + Sync {
    fn fetch_boxed(&self) -> BoxFetch<'_>;
}

impl<C: Credentials> DynCredentials for C {
    fn fetch_boxed(&self) -> BoxFetch<'_> {
        Box::pin(self.fetch())
    }
}

struct FromFn<F>(F);

impl<F, Fut> Credentials for FromFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Fetched, CredentialsError>> + Send,
{
    fn fetch(&self) -> impl Future<Output = Result<Fetched, CredentialsError>> + Send {
        (self.0)()
    }
}

/// Where a connection's credentials come from: a command, a file, an environment variable,
/// or any [`Credentials`] given in code. Cheap to clone; its `Debug` shows only the kind of
/// source (and the file's path or the variable's name), never a secret.
///
/// From `[connections.<name>]` of the SQL providers: `password_command`, `password_file`,
/// `password_env` (and `credentials_lifetime` for sources that give no expiry).
#[derive(Clone)]
pub struct CredentialSource(Source);

#[derive(Clone)]
enum Source {
    Command(String),
    File(PathBuf),
    Env(String),
    Code(Arc<dyn DynCredentials>),
}

impl CredentialSource {
    /// The trimmed standard output of `command`, run with `sh -c` on every fetch (e.g.
    /// `vault read -field=password database/creds/app`). A failing command's output is not quoted.
    pub fn command(command: impl Into<String>) -> Self {
        CredentialSource(Source::Command(command.into()))
    }

    /// The trimmed content of the file at `path`, re-read on every fetch (a Kubernetes-mounted
    /// secret that the kubelet replaces).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        CredentialSource(Source::File(path.into()))
    }

    /// The environment variable `name`, read on every fetch.
    pub fn env(name: impl Into<String>) -> Self {
        CredentialSource(Source::Env(name.into()))
    }

    /// Any [`Credentials`] implementation.
    pub fn new(credentials: impl Credentials) -> Self {
        CredentialSource(Source::Code(Arc::new(credentials)))
    }

    /// A closure or async fn returning [`Fetched`], called on every fetch.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use connscope::{CredentialSource, Fetched};
    ///
    /// let current = Arc::new(Mutex::new(String::from("first")));
    /// let source = CredentialSource::from_fn(move || {
    ///     let password = current.lock().unwrap().clone();
    ///     async move { Ok(Fetched::new(password)) }
    /// });
    /// # let _ = source;
    /// ```
    pub fn from_fn<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Fetched, CredentialsError>> + Send + 'static,
    {
        Self::new(FromFn(f))
    }

    /// Fresh credentials from this source.
    pub async fn fetch(&self) -> Result<Fetched, CredentialsError> {
        match &self.0 {
            Source::Command(command) => {
                let command = command.clone();
                let name = format!("the command `{}`", program_of(&command));
                let output =
                    blocking(move || std::process::Command::new("sh").arg("-c").arg(&command).output())
                        .await
                        .map_err(|e| CredentialsError::new(&name, e))?
                        .map_err(|e| CredentialsError::new(&name, format!("could not run it ({e})")))?;
                if !output.status.success() {
                    // stderr may echo what it read: never quoted.
                    return Err(CredentialsError::new(
                        &name,
                        format!("it failed ({}; its output is not quoted)", output.status),
                    ));
                }
                let text = String::from_utf8(output.stdout)
                    .map_err(|_| CredentialsError::new(&name, "its output is not UTF-8"))?;
                nonempty(text, &name)
            }
            Source::File(path) => {
                let name = format!("the file `{}`", path.display());
                let read = path.clone();
                let (bytes, seen) = blocking(move || {
                    let meta = std::fs::metadata(&read).ok();
                    std::fs::read(&read).map(|bytes| {
                        let seen = Seen::of(meta.as_ref(), &bytes);
                        (bytes, seen)
                    })
                })
                .await
                .map_err(|e| CredentialsError::new(&name, e))?
                .map_err(|e| CredentialsError::new(&name, format!("could not read it ({e})")))?;
                let text = String::from_utf8(bytes).map_err(|e| {
                    zeroize::Zeroize::zeroize(&mut e.into_bytes());
                    CredentialsError::new(&name, "it is not UTF-8")
                })?;
                let mut fetched = nonempty(text, &name)?;
                // What the client built with these credentials watches.
                fetched.stamp = Some(FileStamp::new(path.clone(), Some(seen)));
                Ok(fetched)
            }
            Source::Env(var) => {
                let name = format!("the environment variable `{var}`");
                match std::env::var(var) {
                    Ok(text) => nonempty(text, &name),
                    Err(_) => Err(CredentialsError::new(&name, "it is not set (or not UTF-8)")),
                }
            }
            Source::Code(c) => c.fetch_boxed().await,
        }
    }
}

impl<C: Credentials> From<Arc<C>> for CredentialSource {
    fn from(c: Arc<C>) -> Self {
        CredentialSource(Source::Code(c))
    }
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            // The command's arguments could carry a secret: only its program.
            Source::Command(c) => write!(f, "CredentialSource::Command({:?} …)", program_of(c)),
            Source::File(p) => write!(f, "CredentialSource::File({p:?})"),
            Source::Env(v) => write!(f, "CredentialSource::Env({v:?})"),
            Source::Code(_) => f.write_str("CredentialSource::Code"),
        }
    }
}

/// Same kind and configuration (a source given in code: the same instance).
impl PartialEq for CredentialSource {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Source::Command(a), Source::Command(b)) | (Source::Env(a), Source::Env(b)) => a == b,
            (Source::File(a), Source::File(b)) => a == b,
            (Source::Code(a), Source::Code(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
            _ => false,
        }
    }
}

impl std::hash::Hash for CredentialSource {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match &self.0 {
            Source::Command(c) => (0u8, c).hash(h),
            Source::File(p) => (1u8, p).hash(h),
            Source::Env(v) => (2u8, v).hash(h),
            Source::Code(c) => (3u8, Arc::as_ptr(c) as *const () as usize).hash(h),
        }
    }
}

fn program_of(command: &str) -> &str {
    command.split_whitespace().next().unwrap_or("")
}

fn nonempty(mut text: String, name: &str) -> Result<Fetched, CredentialsError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(CredentialsError::new(name, "it gave an empty value"));
    }
    let fetched = Fetched::new(trimmed);
    zeroize::Zeroize::zeroize(&mut text);
    Ok(fetched)
}

/// Runs blocking I/O off the async threads (inline without a Tokio runtime).
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.spawn_blocking(f).await.map_err(|e| format!("its task failed ({e})")),
        Err(_) => Ok(f()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sources_read_fresh_values_and_never_print_them() {
        let dir = std::env::temp_dir().join(format!("connscope-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "s3cret-one\n").unwrap();
        let source = CredentialSource::file(&file);
        assert_eq!(source.fetch().await.unwrap().password.expose(), "s3cret-one");
        std::fs::write(&file, "s3cret-two").unwrap();
        let fetched = source.fetch().await.unwrap();
        assert_eq!(fetched.password.expose(), "s3cret-two", "re-read on every fetch");
        assert!(!format!("{fetched:?}{source:?}").contains("s3cret"));

        let cmd = CredentialSource::command("printf '  tok-123 \\n'");
        assert_eq!(cmd.fetch().await.unwrap().password.expose(), "tok-123");
        let failing = CredentialSource::command("echo leaked-secret >&2; exit 3");
        let err = failing.fetch().await.unwrap_err().to_string();
        assert!(err.contains("`echo`") && !err.contains("leaked-secret"), "{err}");

        let missing = CredentialSource::env("CONNSCOPE_TEST_SURELY_UNSET_VAR").fetch().await.unwrap_err();
        assert!(missing.to_string().contains("not set"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Files watched by polling: the secrets file and a `password_file` credential source. A file
//! has changed when its length, its modification time or a digest of its content differs from
//! what was seen; the content itself is never kept (the digest is keyed per process, so it is
//! no oracle for a secret). Polling is portable (no inotify/kqueue crate, which misses the
//! symlink swaps a Kubernetes secret mount does), and a secrets file is small.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::secrets::keyed_digest;

/// How often watched files are polled unless the runtime says otherwise
/// ([`RuntimeBuilder::secrets_poll_interval`](crate::RuntimeBuilder::secrets_poll_interval)).
pub const DEFAULT_SECRETS_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What a poll saw of a file: its length, modification time and a keyed digest of its content
/// (`None`: the file did not exist or could not be read).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    len: u64,
    modified: Option<SystemTime>,
    digest: u64,
}

impl Seen {
    /// What `content`, read from a file with metadata `meta`, looks like to a later poll.
    pub(crate) fn of(meta: Option<&std::fs::Metadata>, content: &[u8]) -> Seen {
        Seen {
            len: content.len() as u64,
            modified: meta.and_then(|m| m.modified().ok()),
            digest: keyed_digest(content),
        }
    }
}

/// A file and what it held when it was read: tells whether it changed since.
#[derive(Clone)]
pub struct FileStamp {
    path: PathBuf,
    seen: Option<Seen>,
}

impl FileStamp {
    pub(crate) fn new(path: PathBuf, seen: Option<Seen>) -> Self {
        FileStamp { path, seen }
    }

    /// `path` as it is now (read at once: blocking I/O). A provider whose `connect` reads its
    /// credentials from a file returns this from [`Provider::watched_file`](crate::Provider::watched_file).
    pub fn of(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let seen = match poll(&path) {
            None => None,
            Some((seen, content)) => {
                if let Ok(mut content) = content {
                    zeroize::Zeroize::zeroize(&mut content);
                }
                seen
            }
        };
        FileStamp { path, seen }
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file now differs from when it was stamped (length, modification time or
    /// content; a file that appeared or went away has changed). Reads the file: blocking I/O.
    pub fn changed(&self) -> bool {
        FileStamp::of(&self.path).seen != self.seen
    }
}

impl fmt::Debug for FileStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStamp").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Reads `path` once: what a poll sees, and the content (`None` when the file does not exist
/// or cannot be read; the error is in the `Err` of the content).
pub(crate) fn poll(path: &Path) -> Option<(Option<Seen>, std::io::Result<Vec<u8>>)> {
    let meta = std::fs::metadata(path);
    match std::fs::read(path) {
        Ok(content) => Some((Some(Seen::of(meta.as_ref().ok(), &content)), Ok(content))),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => Some((None, Err(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_sees_a_same_size_edit_a_new_file_and_a_removed_one() {
        let dir = std::env::temp_dir().join(format!("connscope-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("password");
        let absent = FileStamp::of(&path);
        assert!(!absent.changed(), "still absent");
        std::fs::write(&path, "secret-aaaa").unwrap();
        assert!(absent.changed(), "appeared");
        let stamp = FileStamp::of(&path);
        assert!(!stamp.changed(), "untouched");
        // Same length, and (on a coarse clock) the same modification time: the digest tells.
        std::fs::write(&path, "secret-bbbb").unwrap();
        assert!(stamp.changed(), "same-size edit");
        assert!(!format!("{stamp:?}").contains("secret"), "{stamp:?}");
        std::fs::remove_file(&path).unwrap();
        assert!(FileStamp::of(&path).seen.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

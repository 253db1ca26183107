//! `--jwt-denylist`: token ids (`jti`) and subjects (`sub`) that are
//! refused even with a valid signature, re-read when the file changes or at
//! SIGHUP, and watched by every live stream that a JWT opened.
//!
//! The file is one value per line; blank lines and lines starting with `#`
//! are skipped. A value denies a token whose `jti` or `sub` equals it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::shutdown::Reloads;

/// How often the file's modification time and length are looked at: the
/// bound on how long a revoked stream may go on after the file changes.
pub const POLL: Duration = Duration::from_secs(1);

/// The denied values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Denylist {
    values: HashSet<Box<str>>,
}

impl Denylist {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(Into::into)
            .collect();
        Self { values }
    }

    /// Reads and parses `path`.
    ///
    /// # Errors
    ///
    /// A message naming the file when it cannot be read.
    pub fn read(path: &Path) -> Result<Self, String> {
        std::fs::read_to_string(path)
            .map(|text| Self::parse(&text))
            .map_err(|e| format!("{}: cannot be read: {e}", path.display()))
    }

    /// Whether a token of subject `sub` and id `jti` is denied.
    pub fn denies(&self, sub: &str, jti: Option<&str>) -> bool {
        self.values.contains(sub) || jti.is_some_and(|jti| self.values.contains(jti))
    }

    /// How many values are listed.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The configured file and what it held at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenylistFile {
    /// The file.
    pub path: PathBuf,
    /// Its contents when the configuration was read.
    pub initial: Denylist,
}

/// The denylist in force, as every stream sees it.
pub type Watch = watch::Receiver<Arc<Denylist>>;

/// A denylist that never changes (none configured).
pub fn fixed(list: Denylist) -> Watch {
    // The sender is dropped: `changed()` then fails at once, and the
    // streams' waits on it end (see `lease`).
    watch::channel(Arc::new(list)).1
}

/// Keeps `file` in force: re-read when its modification time or length
/// changes (looked at every [`POLL`]) and at every SIGHUP, until `cancel`.
/// A file that cannot be read is logged and the list in force stays.
pub fn watch_file(file: DenylistFile, cancel: CancellationToken) -> Watch {
    let (tx, rx) = watch::channel(Arc::new(file.initial.clone()));
    // Taken now: a change made from here on is seen.
    let seen = stamp(&file.path);
    tokio::spawn(reload(file.path, seen, tx, cancel));
    rx
}

async fn reload(
    path: PathBuf,
    mut seen: Option<(SystemTime, u64)>,
    tx: watch::Sender<Arc<Denylist>>,
    cancel: CancellationToken,
) {
    let mut hangups = Reloads::install()
        .inspect_err(|e| tracing::warn!("denylist: no SIGHUP handler ({e}); polling only"))
        .ok();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let forced = tokio::select! {
            () = cancel.cancelled() => return,
            _ = poll.tick() => false,
            _ = hangup => true,
        };
        let now = stamp(&path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match Denylist::read(&path) {
            Ok(list) => {
                tracing::info!(entries = list.len(), "denylist reloaded");
                tx.send_replace(Arc::new(list));
            }
            Err(e) => tracing::error!("denylist reload failed, keeping the list in force: {e}"),
        }
    }
}

/// The file's modification time and length, to notice a change.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_values_and_comments_and_blanks_are_skipped() {
        let list = Denylist::parse("# revoked\nclient-7\n\n  jti-42  \n");
        assert_eq!(list.len(), 2);
        assert!(list.denies("client-7", None));
        assert!(list.denies("client-1", Some("jti-42")));
        assert!(!list.denies("client-1", Some("jti-4")));
        assert!(!list.denies("# revoked", None));
    }

    #[tokio::test]
    async fn a_changed_file_is_seen_by_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny");
        std::fs::write(&path, "a\n").unwrap();
        let cancel = CancellationToken::new();
        let file = DenylistFile {
            initial: Denylist::read(&path).unwrap(),
            path: path.clone(),
        };
        let mut watch = watch_file(file, cancel.clone());
        assert!(!watch.borrow().denies("client-9", None));
        std::fs::write(&path, "a\nclient-9\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("the change is seen within the poll")
            .unwrap();
        assert!(watch.borrow().denies("client-9", None));
        cancel.cancel();
    }
}

//! One server per SQLite file: an SQLite database has no notification
//! stream, so a second server on the same file would serve subscribers who
//! never see the first one's events. The server takes an exclusive
//! `flock` on the database file itself and holds it until its store
//! closes (or the process ends, whatever way it ends); a second server
//! finds it taken and refuses to start.
//!
//! `flock` locks and the POSIX (`fcntl`) locks SQLite takes on the same
//! file are independent on Linux. The lock's descriptor is closed only
//! once the pool has closed: closing a descriptor of a file drops every
//! POSIX lock the process holds on it, SQLite's included.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use super::Error;

/// An exclusive lock on a database file; dropping it releases it.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Locks `path` (creating it empty if missing, which SQLite reads as a
    /// new database), without waiting.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] when another process (or another store in this
    /// one) holds it; [`Error::LockFile`] when it cannot be opened.
    pub fn acquire(path: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| Error::LockFile {
                path: path.to_owned(),
                source,
            })?;
        // SAFETY: flock on a descriptor this function owns; no memory is
        // shared with the kernel.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let source = std::io::Error::last_os_error();
            return Err(if source.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked {
                    path: absolute(path),
                }
            } else {
                Error::LockFile {
                    path: path.to_owned(),
                    source,
                }
            });
        }
        Ok(Self { _file: file })
    }
}

/// `path` made absolute for a message, as it is when it cannot be.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.db");
        let first = FileLock::acquire(&path).unwrap();
        let err = FileLock::acquire(&path).unwrap_err();
        assert!(
            matches!(&err, Error::Locked { path: p } if p == &path),
            "{err}"
        );
        drop(first);
        FileLock::acquire(&path).unwrap();
    }
}

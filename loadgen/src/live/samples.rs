//! `--samples-jsonl PATH`: one JSON line per timeline row (about one a
//! second) of every run of the invocation, each saying its run, written
//! and flushed as the run goes, for users who ship figures elsewhere. A
//! line is the dashboard's `sample` event ([`Sample`](super::event::Sample)).
//!
//! A write that fails does not stop the run: the first failure is kept
//! and reported when the invocation ends, which then cannot succeed.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::Context as _;

/// The samples file.
#[derive(Debug)]
pub(super) struct Samples {
    path: PathBuf,
    /// The file, and the first write that failed (nothing more is
    /// written after one).
    file: Mutex<(File, Option<io::Error>)>,
}

impl Samples {
    /// Creates (or empties) the file at `path`.
    ///
    /// # Errors
    ///
    /// It cannot be created.
    pub(super) fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("--samples-jsonl: creating {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new((file, None)),
        })
    }

    /// Writes a sample's JSON (one line, as its dashboard event carries
    /// it), flushed.
    pub(super) fn write(&self, json: &str) {
        let mut line = Vec::with_capacity(json.len() + 1);
        line.extend_from_slice(json.as_bytes());
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, failed) = &mut *guard;
        if failed.is_none()
            && let Err(e) = file.write_all(&line).and_then(|()| file.flush())
        {
            tracing::error!("writing {}: {e}", self.path.display());
            *failed = Some(e);
        }
    }

    /// Ends the file.
    ///
    /// # Errors
    ///
    /// A line could not be written.
    pub(super) fn finish(&self) -> anyhow::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.1.take() {
            Some(e) => {
                Err(e).with_context(|| format!("--samples-jsonl: writing {}", self.path.display()))
            }
            None => Ok(()),
        }
    }
}

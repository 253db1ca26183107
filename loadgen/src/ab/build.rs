//! The server builds an A/B comparison measures: the server built into
//! this load generator (`embedded`), a server binary's path, or `git:REF`:
//! that commit of the checkout in the working directory, built into a
//! worktree of its own (`git worktree add --detach`) with
//! `cargo build --locked -p streamgauge-server`. Built binaries are kept
//! under the build directory by commit and profile and reused; the cargo
//! target directory is `CARGO_TARGET_DIR` when set (sharing its cache),
//! otherwise one under the build directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;

use anyhow::Context as _;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::local_server::ServerProgram;

/// A build named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Build {
    /// The server built into this load generator.
    Embedded,
    /// A `streamgauge-server` binary.
    Binary(PathBuf),
    /// A git commit of the checkout in the working directory.
    Git(String),
}

impl std::fmt::Display for Build {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Build::Embedded => f.write_str("embedded"),
            Build::Binary(path) => write!(f, "{}", path.display()),
            Build::Git(reference) => write!(f, "git:{reference}"),
        }
    }
}

impl FromStr for Build {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" => Err("give `embedded`, a server binary's path, or git:REF".to_owned()),
            "embedded" => Ok(Build::Embedded),
            _ => match text.strip_prefix("git:") {
                Some("") => Err("git: needs a ref, such as git:main or git:HEAD~1".to_owned()),
                Some(reference) => Ok(Build::Git(reference.to_owned())),
                None => Ok(Build::Binary(PathBuf::from(text))),
            },
        }
    }
}

/// A build ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// How to start it.
    pub program: ServerProgram,
    /// Its commit, for a git build.
    pub commit: Option<String>,
}

/// Where and how git builds are made.
#[derive(Debug, Clone)]
pub struct Builder {
    /// Binaries, worktrees and (without `CARGO_TARGET_DIR`) the target dir.
    pub dir: PathBuf,
    /// The cargo profile (`release`, `dev`, `profiling`).
    pub profile: String,
}

/// Runs `program` with `args` in `dir`; its stdout, trimmed, on success.
async fn run(program: &str, args: &[&str], dir: &Path) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        output.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The directory cargo puts a profile's binaries in.
fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    }
}

impl Builder {
    /// Makes `build` ready: a git build is built unless a binary of its
    /// commit and profile is already there.
    ///
    /// # Errors
    ///
    /// A binary that does not exist, a ref that is not a commit, or a
    /// build that fails; or `cancel`.
    pub async fn ready(&self, build: &Build, cancel: &CancellationToken) -> anyhow::Result<Ready> {
        match build {
            Build::Embedded => Ok(Ready {
                program: ServerProgram::Embedded,
                commit: None,
            }),
            Build::Binary(path) => {
                anyhow::ensure!(path.is_file(), "no server binary at {}", path.display());
                Ok(Ready {
                    program: ServerProgram::Binary(path.clone()),
                    commit: None,
                })
            }
            Build::Git(reference) => {
                tokio::select! {
                    () = cancel.cancelled() => anyhow::bail!("interrupted while building git:{reference}"),
                    built = self.git(reference) => built,
                }
            }
        }
    }

    async fn git(&self, reference: &str) -> anyhow::Result<Ready> {
        let here = std::env::current_dir().context("reading the working directory")?;
        let commit = run(
            "git",
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{reference}^{{commit}}"),
            ],
            &here,
        )
        .await
        .with_context(|| {
            format!(
                "git:{reference} is not a commit of the checkout at {}",
                here.display()
            )
        })?;
        let dir = std::path::absolute(&self.dir).context("resolving the build directory")?;
        let binary = dir.join("bin").join(format!(
            "streamgauge-server-{}-{}",
            &commit[..12],
            self.profile
        ));
        if !binary.is_file() {
            self.build(&here, &dir, &commit, &binary).await?;
        }
        Ok(Ready {
            program: ServerProgram::Binary(binary),
            commit: Some(commit),
        })
    }

    /// Builds `commit` in a fresh worktree and copies its server to `binary`.
    async fn build(
        &self,
        repo: &Path,
        dir: &Path,
        commit: &str,
        binary: &Path,
    ) -> anyhow::Result<()> {
        let worktree = dir.join("worktrees").join(commit);
        let worktree_arg = worktree.to_string_lossy().into_owned();
        if worktree.exists() {
            run(
                "git",
                &["worktree", "remove", "--force", &worktree_arg],
                repo,
            )
            .await?;
        }
        run("git", &["worktree", "prune"], repo).await?;
        run(
            "git",
            &["worktree", "add", "--detach", &worktree_arg, commit],
            repo,
        )
        .await?;
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
        let target_arg = target.to_string_lossy().into_owned();
        tracing::info!(commit, profile = self.profile, "building the server");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let built = run(
            &cargo,
            &[
                "build",
                "--locked",
                "-p",
                "streamgauge-server",
                "--profile",
                &self.profile,
                "--target-dir",
                &target_arg,
            ],
            &worktree,
        )
        .await;
        let copied = match built {
            Ok(_) => copy(
                &target
                    .join(profile_dir(&self.profile))
                    .join("streamgauge-server"),
                binary,
            ),
            Err(e) => Err(e.context(format!("building commit {commit}"))),
        };
        run(
            "git",
            &["worktree", "remove", "--force", &worktree_arg],
            repo,
        )
        .await?;
        copied
    }
}

/// Copies `from` to `to` through a temporary name, so a half-copied binary
/// is never taken for a build.
fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let parent = to.parent().context("a binary path has a directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let partial = to.with_extension("partial");
    std::fs::copy(from, &partial)
        .and_then(|_| std::fs::rename(&partial, to))
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_named_three_ways() {
        assert_eq!("embedded".parse(), Ok(Build::Embedded));
        assert_eq!("git:main".parse(), Ok(Build::Git("main".to_owned())));
        assert_eq!(
            "target/release/streamgauge-server".parse(),
            Ok(Build::Binary(PathBuf::from(
                "target/release/streamgauge-server"
            )))
        );
        assert!("git:".parse::<Build>().unwrap_err().contains("needs a ref"));
        assert!("".parse::<Build>().is_err());
        assert_eq!(profile_dir("dev"), "debug");
        assert_eq!(profile_dir("profiling"), "profiling");
    }
}

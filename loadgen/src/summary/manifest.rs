//! The manifest every summary carries, so a figure can be reproduced: what
//! was built (project commit and whether the checkout was dirty, rustc), on
//! what (cores, memory, kernel, CPU), under which limits (open files, the
//! ephemeral port range), the exact scenario, the server measured, and the
//! CPU seconds the server and the load generator used.
//!
//! Facts come from `/proc`, `getrlimit` and `git` in the working directory;
//! one that cannot be read is `null`, never guessed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde::Serialize;

use crate::metrics::monitor::CpuSeconds;
use crate::scenario::Scenario;

/// Versions: of the project, of its checkout, of the compiler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Versions {
    /// This load generator's crate version.
    pub streamgauge: &'static str,
    /// `HEAD` of the git checkout the run was made in (`null` outside one).
    pub git_commit: Option<String>,
    /// Whether that checkout had uncommitted changes to tracked files.
    pub git_dirty: Option<bool>,
    /// The compiler that built the load generator (and its embedded server).
    pub rustc: &'static str,
}

/// The machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// CPUs this process may run on.
    pub cores: usize,
    /// Total memory, MiB.
    pub memory_mb: Option<f64>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// CPU model name.
    pub cpu: Option<String>,
}

/// Limits that bound how many connections a run can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Open files per process: soft limit (after raising it).
    pub open_files: Option<u64>,
    /// Open files per process: hard limit.
    pub open_files_hard: Option<u64>,
    /// Ephemeral ports: first and last.
    pub ephemeral_ports: Option<[u16; 2]>,
}

/// What is the same for every run of one invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Environment {
    /// Versions.
    pub versions: Versions,
    /// The machine.
    pub machine: Machine,
    /// Limits.
    pub limits: Limits,
}

/// The server measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerUnderTest {
    /// `embedded` (the server built with this load generator), a binary's
    /// path, or the URL of a server started elsewhere.
    pub program: String,
    /// Extra arguments it was started with.
    pub args: Vec<String>,
}

/// A run's manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// Versions, machine and limits.
    #[serde(flatten)]
    pub environment: Arc<Environment>,
    /// The server measured.
    pub server: ServerUnderTest,
    /// The exact scenario, as run.
    pub scenario: Scenario,
    /// CPU seconds used during the load.
    pub cpu_seconds: CpuSeconds,
}

impl Environment {
    /// Reads the facts of this machine and of the checkout in `dir`.
    pub fn detect(dir: &Path) -> Self {
        let (git_commit, git_dirty) = git(dir);
        let (open_files, open_files_hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map_or((None, None), |(soft, hard)| (Some(soft), Some(hard)));
        Self {
            versions: Versions {
                streamgauge: env!("CARGO_PKG_VERSION"),
                git_commit,
                git_dirty,
                rustc: env!("STREAMGAUGE_RUSTC"),
            },
            machine: Machine {
                cores: std::thread::available_parallelism().map_or(1, usize::from),
                memory_mb: meminfo_total_kib().map(|kib| kib as f64 / 1024.0),
                kernel: read_trimmed("/proc/sys/kernel/osrelease"),
                cpu: cpu_model(),
            },
            limits: Limits {
                open_files,
                open_files_hard,
                ephemeral_ports: port_range(),
            },
        }
    }
}

/// `HEAD` and the dirty flag of the git checkout at `dir`, if it is one.
fn git(dir: &Path) -> (Option<String>, Option<bool>) {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
    };
    let Some(commit) = run(&["rev-parse", "HEAD"]) else {
        return (None, None);
    };
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    (Some(commit.trim().to_owned()), dirty)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn meminfo_total_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = cpuinfo.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

fn port_range() -> Option<[u16; 2]> {
    let text = read_trimmed("/proc/sys/net/ipv4/ip_local_port_range")?;
    let mut ports = text.split_whitespace().map(str::parse);
    match (ports.next(), ports.next()) {
        (Some(Ok(first)), Some(Ok(last))) => Some([first, last]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_this_machine_and_checkout_are_read() {
        let here = Environment::detect(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(here.machine.cores >= 1);
        assert!(here.machine.memory_mb.is_some_and(|mb| mb > 0.0));
        assert!(here.machine.kernel.is_some());
        assert!(here.limits.open_files.is_some());
        let [first, last] = here.limits.ephemeral_ports.unwrap();
        assert!(first < last);
        assert!(
            here.versions.rustc.starts_with("rustc "),
            "{}",
            here.versions.rustc
        );
        // The project is developed and tested in a git checkout.
        let commit = here.versions.git_commit.unwrap();
        assert_eq!(commit.len(), 40, "{commit}");
        assert!(here.versions.git_dirty.is_some());

        let nowhere = Environment::detect(Path::new("/"));
        assert_eq!(
            (nowhere.versions.git_commit, nowhere.versions.git_dirty),
            (None, None)
        );
    }
}

//! Who runs a run's virtual clients: this process ([`Clients`]), worker
//! processes on this machine ([`Workers`]), or agents on others
//! ([`Agents`]); and what it takes to follow the load, notice a failure
//! and stop them, whichever it is.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::agents::{Agents, Loss};
use super::clients::{Clients, Load, Share};
use super::worker::{self, Setup, Workers};
use crate::client::Target;
use crate::metrics::Shards;

/// Who runs the virtual clients.
#[derive(Debug)]
pub enum Fleet {
    /// This process, every client of its share (boxed: far larger than the
    /// others).
    Here(Box<Clients>),
    /// Worker processes, each its share.
    Workers(Workers),
    /// Agents on other machines, each its share (and its publishers').
    Agents(Agents),
}

/// A failure in the fleet while the run goes on.
#[derive(Debug)]
pub enum Trouble {
    /// A worker process failed: the run fails.
    Worker(worker::Failure),
    /// An agent was lost.
    Agent(Loss),
}

impl Fleet {
    /// The clients of `setup`'s share, run here (`workers` ≤ 1) or by that
    /// many worker processes (each its part of the share); they record
    /// into `shards`.
    ///
    /// # Errors
    ///
    /// The clients cannot be set up, or a worker cannot be started.
    pub async fn local(
        setup: Setup,
        workers: usize,
        shards: &Arc<Shards>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        if workers <= 1 {
            let targets = setup.targets.into_iter().map(Arc::new).collect();
            return Ok(Fleet::Here(Box::new(Clients::new(
                setup.load,
                setup.share,
                targets,
                Arc::clone(shards),
                setup.token,
                stop.child_token(),
            )?)));
        }
        Ok(Fleet::Workers(
            Workers::start(workers, &setup, shards).await?,
        ))
    }

    /// Follows the load `elapsed` into the run (workers and agents follow
    /// it on the same clock themselves).
    pub fn follow(&mut self, elapsed: Duration) {
        if let Fleet::Here(clients) = self {
            clients.follow(elapsed);
        }
    }

    /// How far ahead of now the run's start is set, for every process to
    /// learn it before it comes: a margin over the agents' round trips
    /// (none for processes on this machine).
    pub fn lead(&self) -> Duration {
        match self {
            Fleet::Agents(agents) => agents.lead(),
            Fleet::Here(_) | Fleet::Workers(_) => Duration::ZERO,
        }
    }

    /// The worker processes' ids (none for clients run here or by
    /// agents).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Fleet::Workers(workers) => workers.pids(),
            Fleet::Here(_) | Fleet::Agents(_) => Vec::new(),
        }
    }

    /// The next failure of a worker or loss of an agent; never for clients
    /// run here. Cancel safe.
    pub async fn trouble(&mut self) -> Trouble {
        match self {
            Fleet::Here(_) => std::future::pending().await,
            Fleet::Workers(workers) => Trouble::Worker(workers.failure().await),
            Fleet::Agents(agents) => Trouble::Agent(agents.loss().await),
        }
    }

    /// Stops every client, topic subscribers told the seq they must hold
    /// by now, once each has flushed its measurements.
    ///
    /// # Errors
    ///
    /// A worker process fails to stop (an agent that does is recorded as
    /// lost instead).
    pub async fn stop(&mut self, settled: u64) -> anyhow::Result<()> {
        match self {
            Fleet::Here(clients) => {
                clients.stop(settled).await;
                Ok(())
            }
            Fleet::Workers(workers) => workers.stop(settled).await,
            Fleet::Agents(agents) => {
                agents.stop(settled).await;
                Ok(())
            }
        }
    }
}

/// What a worker or agent needs of a run beyond its load: the server's
/// nodes, the run's id and token.
pub fn setup_of(load: Load, targets: &[Arc<Target>], run_id: &str, token: Option<&str>) -> Setup {
    Setup {
        load,
        targets: targets.iter().map(|t| (**t).clone()).collect(),
        run_id: run_id.to_owned(),
        token: token.map(str::to_owned),
        share: Share::ALL,
        clock_adjustment_us: 0,
    }
}

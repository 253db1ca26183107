//! The state shared by every handler: configuration, metrics, the live
//! connections and the shutdown handle. Cheap to clone (`Arc` fields).

use std::sync::Arc;

use crate::admission::Admission;
use crate::config::Config;
use crate::connections::Connections;
use crate::metrics::{Metrics, TransportKind};
use crate::session::Session;
use crate::shutdown::Shutdown;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The open streams and the connection limit.
    pub connections: Arc<Connections>,
    /// The shutdown handle every stream watches.
    pub shutdown: Shutdown,
}

impl AppState {
    /// State for a server running with `config` until `shutdown`.
    pub fn new(config: Config, shutdown: Shutdown) -> Self {
        let metrics = Arc::new(Metrics::new());
        let admission = Admission::new(config.max_connections);
        Self {
            connections: Arc::new(Connections::new(admission, Arc::clone(&metrics))),
            config: Arc::new(config),
            metrics,
            shutdown,
        }
    }

    /// The session settings of a new stream on `transport`.
    pub fn session(&self, transport: TransportKind) -> Session {
        Session {
            cancel: self.shutdown.token().child_token(),
            keep_alive: self.config.keepalive_interval,
            metrics: self.metrics.transport(transport).clone(),
        }
    }
}

//! The agent's `/metrics`: a scrape is the typed status (as `status --json`
//! gives it) and the maps' census, rendered by `metrics`.
use std::sync::Arc;

use super::Agent;
use crate::{
    enforcer::Enforcer,
    metrics::{Metrics, serve},
    status::Status,
};

/// One scrape (blocking: it reads the maps).
pub fn scrape(agent: &Agent, metrics: &Metrics) -> String {
    let status = Status::gather(&agent.instance, Some(agent.agent_status()));
    let bans = match Enforcer::open(&agent.instance.pin_dir).and_then(|e| e.list()) {
        Ok(b) => b,
        Err(e) => {
            log::warn!(
                "metrics: listing the bans in the maps: {}",
                crate::error_chain(&e)
            );
            Vec::new()
        }
    };
    metrics.render(metrics.sample(status, &bans))
}

/// Serves the metrics on `listener` until the task is aborted.
pub fn spawn(
    listener: std::net::TcpListener,
    agent: Arc<Agent>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    log::info!("serving metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        let render = Arc::new(move || scrape(&agent, &metrics));
        if let Err(e) = serve(listener, render).await {
            log::error!("metrics endpoint stopped: {e}");
        }
    })
}

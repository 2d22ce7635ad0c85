//! Prometheus metrics: `fail2xdp run --metrics ADDR:PORT` serves them on
//! `/metrics` (OpenMetrics text, prometheus-client). Everything but the ban
//! latency is read at scrape time from the typed status (status.rs, what
//! `status --json` prints) and the census of the maps (census.rs); the
//! latency histogram is fed by the ban service's events. No label carries an
//! address: origins, jails, families, sources, maps.
mod render;
mod server;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

pub use server::{Endpoint, MetricsError, serve};

use crate::{
    ban::{BanEvent, Subscriber},
    census::{DropLedger, Family, Group},
    enforcer::BanInfo,
    status::Status,
};

/// Ban latency buckets: 100 µs to about 26 s, doubling.
const LATENCY_START: f64 = 0.0001;
const LATENCY_BUCKETS: u16 = 19;

/// The agent's metrics: what lives between scrapes (the latency histogram,
/// the running totals of drops).
#[derive(Debug)]
pub struct Metrics {
    latency: Histogram,
    ledger: Mutex<DropLedger>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            latency: Histogram::new(exponential_buckets(LATENCY_START, 2.0, LATENCY_BUCKETS)),
            ledger: Mutex::new(DropLedger::default()),
        }
    }
}

/// One scrape's worth of the typed status.
#[derive(Debug, Clone)]
pub struct Sample {
    pub status: Status,
    /// Per origin label and family: bans in force, packets dropped so far.
    pub groups: BTreeMap<(String, Family), Group>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// The sample of `status` with the bans in the maps now (booked in the
    /// running totals of drops).
    pub fn sample(&self, status: Status, bans: &[BanInfo]) -> Sample {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        ledger.update(bans);
        Sample {
            status,
            groups: ledger.groups(bans),
        }
    }

    /// The OpenMetrics text of `sample` and the histogram.
    pub fn render(&self, sample: Sample) -> String {
        render::render(&self.latency, sample)
    }
}

impl Subscriber for Metrics {
    fn event(&self, e: &BanEvent) {
        if let BanEvent::Banned(b) = e
            && let Some(l) = b.latency
        {
            self.latency.observe(l.as_secs_f64());
        }
    }
}

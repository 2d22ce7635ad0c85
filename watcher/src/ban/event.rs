//! What the ban service did, as one typed event per ban, unban or refusal.
//! Logging, metrics and fleet sharing subscribe; the service never asks
//! them anything back.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;

use super::{Origin, Refusal};
use crate::addr::{PortSet, format_duration};

#[derive(Debug, Clone)]
pub enum BanEvent {
    /// A ban is in force (or would be, in a dry run).
    Banned(Banned),
    /// Bans of `net` were lifted (`origins`: whose claims went).
    Unbanned { net: IpNet, origins: Vec<Origin> },
    /// The guard refused a ban.
    Refused { origin: Origin, refusal: Refusal },
    /// Writing a ban failed (maps or store).
    Failed {
        net: IpNet,
        origin: Origin,
        error: String,
    },
    /// A blocklist import was applied.
    Imported {
        origin: Origin,
        banned: usize,
        refused: usize,
        length: Option<Duration>,
    },
    /// Stored bans were put back into the maps at start.
    Restored {
        restored: usize,
        present: usize,
        skipped: usize,
        took: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Banned {
    pub net: IpNet,
    pub origin: Origin,
    pub reason: String,
    /// None: permanent.
    pub length: Option<Duration>,
    pub expires_at: Option<SystemTime>,
    pub ports: PortSet,
    pub failures: u32,
    /// Bans of this network so far, this one included.
    pub times_banned: u32,
    /// The jail's prefix, when the ban was narrowed to spare a protected address.
    pub narrowed_from: Option<IpNet>,
    /// A ban already in force lasts longer or covers more: it stays (merged).
    pub kept_longer: bool,
    pub dry_run: bool,
    pub evidence: Arc<[String]>,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

/// Receives every event, on the thread that made it; must not block long
/// and must not call the ban service.
pub trait Subscriber: Send + Sync {
    fn event(&self, e: &BanEvent);
}

/// The log line of each event: one per ban and unban; refusals are
/// rate-limited per origin and kind (a spray must not flood the log).
#[derive(Default)]
pub struct LogEvents {
    refusals: Mutex<HashMap<(String, &'static str), Window>>,
}

struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// Refusals logged per origin and kind per window; the rest are counted
/// (status shows them all) and summarised when the window turns.
const REFUSALS_PER_WINDOW: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);

impl LogEvents {
    fn refused(&self, origin: &Origin, refusal: &Refusal) {
        let key = (origin.to_string(), refusal.kind());
        let Ok(mut map) = self.refusals.lock() else {
            return;
        };
        if map.len() > 1024 {
            map.clear();
        }
        let now = Instant::now();
        let w = map.entry(key).or_insert(Window {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        if now.duration_since(w.start) >= WINDOW {
            if w.suppressed > 0 {
                log::info!(
                    "{origin}: {} more ban(s) refused ({}) in the last {}",
                    w.suppressed,
                    refusal.kind(),
                    format_duration(now.duration_since(w.start))
                );
            }
            *w = Window {
                start: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if w.logged < REFUSALS_PER_WINDOW {
            w.logged += 1;
            log::info!("{origin}: {refusal}");
        } else {
            w.suppressed += 1;
        }
    }
}

impl Subscriber for LogEvents {
    fn event(&self, e: &BanEvent) {
        match e {
            BanEvent::Banned(b) => {
                let length = b.length.map_or_else(
                    || "permanently".to_string(),
                    |d| format!("for {}", format_duration(d)),
                );
                let scope = if b.ports.is_all() {
                    "all ports".to_string()
                } else {
                    format!("ports {}", b.ports)
                };
                let narrowed = b
                    .narrowed_from
                    .map(|n| format!(", narrowed from {n} to spare a protected address"))
                    .unwrap_or_default();
                let kept = if b.kept_longer {
                    " (a longer or wider ban stays in force)"
                } else {
                    ""
                };
                // A CrowdSec blocklist is 100,000 decisions: the bouncer
                // logs one line per sync, each ban only at debug level.
                let level = if matches!(b.origin, Origin::CrowdSec(_)) {
                    log::Level::Debug
                } else {
                    log::Level::Info
                };
                log::log!(
                    level,
                    "{}ban {} {length} ({scope}) origin {}, {} failure(s), ban #{}: {}{narrowed}{kept}",
                    if b.dry_run { "[dry-run] " } else { "" },
                    b.net,
                    b.origin,
                    b.failures,
                    b.times_banned,
                    b.reason,
                );
            }
            BanEvent::Unbanned { net, origins } => {
                let o: Vec<String> = origins.iter().map(ToString::to_string).collect();
                let level = if !origins.is_empty()
                    && origins.iter().all(|o| matches!(o, Origin::CrowdSec(_)))
                {
                    log::Level::Debug
                } else {
                    log::Level::Info
                };
                log::log!(level, "unban {net} (origin {})", o.join(", "));
            }
            BanEvent::Refused { origin, refusal } => self.refused(origin, refusal),
            BanEvent::Failed { net, origin, error } => {
                log::error!("ban {net} (origin {origin}) failed: {error}");
            }
            BanEvent::Imported {
                origin,
                banned,
                refused,
                length,
            } => log::info!(
                "import {origin}: {banned} ban(s) {}, {refused} refused",
                length.map_or_else(
                    || "permanent".to_string(),
                    |d| format!("for {}", format_duration(d))
                )
            ),
            BanEvent::Restored {
                restored,
                present,
                skipped,
                took,
            } => log::info!(
                "restored {restored} ban(s) from the state store ({present} already in the maps, {skipped} skipped) in {took:?}"
            ),
        }
    }
}

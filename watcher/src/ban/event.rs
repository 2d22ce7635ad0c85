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
        /// The networks written to the maps (none in a dry run), and the
        /// ports the import covers (every port when empty).
        nets: Arc<[IpNet]>,
        ports: PortSet,
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
    /// From the line's arrival at the match stage to the map write (a
    /// jail's ban in force; None for other origins and dry runs).
    pub latency: Option<Duration>,
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
                tracing::info!(
                    target: "fail2xdp::ban",
                    origin = %origin,
                    kind = refusal.kind(),
                    suppressed = w.suppressed,
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
            tracing::info!(
                target: "fail2xdp::ban",
                origin = %origin,
                jail = origin.jail().map_or("", |j| j.as_str()),
                kind = refusal.kind(),
                "refused: {refusal}"
            );
        } else {
            w.suppressed += 1;
        }
    }
}

impl Subscriber for LogEvents {
    fn event(&self, e: &BanEvent) {
        match e {
            BanEvent::Banned(b) => {
                let duration = b
                    .length
                    .map_or_else(|| "permanent".to_string(), format_duration);
                let ports = b.ports.to_string();
                // A CrowdSec blocklist is 100,000 decisions: the bouncer
                // logs one line per sync, each ban only at debug level.
                macro_rules! ban_line {
                    ($level:ident) => {
                        tracing::$level!(
                            target: "fail2xdp::ban",
                            addr = %b.net,
                            origin = %b.origin,
                            jail = b.origin.jail().map_or("", |j| j.as_str()),
                            duration,
                            duration_secs = b.length.map(|d| d.as_secs()),
                            failures = b.failures,
                            times_banned = b.times_banned,
                            ports,
                            reason = %b.reason,
                            narrowed_from = b.narrowed_from.map(|n| n.to_string()),
                            kept_longer = b.kept_longer,
                            dry_run = b.dry_run,
                            "{}",
                            if b.dry_run { "ban (dry run)" } else { "ban" }
                        )
                    };
                }
                if matches!(b.origin, Origin::CrowdSec(_)) {
                    ban_line!(debug);
                } else {
                    ban_line!(info);
                }
            }
            BanEvent::Unbanned { net, origins } => {
                let o: Vec<String> = origins.iter().map(ToString::to_string).collect();
                let j: Vec<&str> = origins
                    .iter()
                    .filter_map(|o| o.jail().map(|j| j.as_str()))
                    .collect();
                macro_rules! unban_line {
                    ($level:ident) => {
                        tracing::$level!(
                            target: "fail2xdp::ban",
                            addr = %net,
                            origin = o.join(","),
                            jail = j.join(","),
                            "unban"
                        )
                    };
                }
                if !origins.is_empty() && origins.iter().all(|o| matches!(o, Origin::CrowdSec(_))) {
                    unban_line!(debug);
                } else {
                    unban_line!(info);
                }
            }
            BanEvent::Refused { origin, refusal } => self.refused(origin, refusal),
            BanEvent::Failed { net, origin, error } => {
                tracing::error!(
                    target: "fail2xdp::ban",
                    addr = %net,
                    origin = %origin,
                    jail = origin.jail().map_or("", |j| j.as_str()),
                    error = %error,
                    "ban failed"
                );
            }
            BanEvent::Imported {
                origin,
                banned,
                refused,
                length,
                ..
            } => tracing::info!(
                target: "fail2xdp::ban",
                origin = %origin,
                banned,
                refused,
                duration_secs = length.map(|d| d.as_secs()),
                "import {origin}: {banned} ban(s) {}, {refused} refused",
                length.map_or_else(
                    || "permanent".to_string(),
                    |d| format!("for {}", format_duration(d))
                )
            ),
            // The message ends with the time taken (the restore bench reads it).
            BanEvent::Restored {
                restored,
                present,
                skipped,
                took,
            } => tracing::info!(
                target: "fail2xdp::ban",
                "restored {restored} ban(s) from the state store ({present} already in the maps, {skipped} skipped) in {took:?}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
        time::{Duration, SystemTime},
    };

    use super::*;
    use crate::ban::{JailName, Origin};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn json_lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect()
    }

    fn banned() -> Banned {
        let now = SystemTime::now();
        Banned {
            net: "203.0.113.9/32".parse().unwrap(),
            origin: Origin::Jail(JailName::new("postfix-sasl").unwrap()),
            reason: "filter postfix-sasl failregex #0".into(),
            length: Some(Duration::from_secs(600)),
            expires_at: Some(now + Duration::from_secs(600)),
            ports: PortSet(vec![25, 587]),
            failures: 5,
            times_banned: 2,
            narrowed_from: None,
            kept_longer: false,
            dry_run: false,
            evidence: Arc::from(Vec::new()),
            first_seen: now,
            last_seen: now,
            latency: Some(Duration::from_millis(3)),
        }
    }

    /// One line per ban and unban, with what an operator greps for as fields.
    #[test]
    fn bans_and_unbans_are_one_structured_line_each() {
        let log = LogEvents::default();
        let lines = json_lines(|| {
            log.event(&BanEvent::Banned(banned()));
            log.event(&BanEvent::Unbanned {
                net: "203.0.113.9/32".parse().unwrap(),
                origins: vec![
                    Origin::Jail(JailName::new("postfix-sasl").unwrap()),
                    Origin::Manual,
                ],
            });
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let b = &lines[0];
        assert_eq!(b["message"], "ban");
        assert_eq!(b["level"], "INFO");
        assert_eq!(b["addr"], "203.0.113.9/32");
        assert_eq!(b["origin"], "postfix-sasl");
        assert_eq!(b["jail"], "postfix-sasl");
        assert_eq!(b["reason"], "filter postfix-sasl failregex #0");
        assert_eq!(b["duration_secs"], 600);
        assert_eq!(b["duration"], "10m00s");
        assert_eq!(b["failures"], 5);
        assert_eq!(b["times_banned"], 2);
        assert_eq!(b["ports"], "25,587");
        let u = &lines[1];
        assert_eq!(u["message"], "unban");
        assert_eq!(u["addr"], "203.0.113.9/32");
        assert_eq!(u["origin"], "postfix-sasl,manual");
        assert_eq!(u["jail"], "postfix-sasl");
    }

    /// A spray of refused bans logs a few lines per window, not one each.
    #[test]
    fn refusals_are_rate_limited() {
        let log = LogEvents::default();
        let lines = json_lines(|| {
            for _ in 0..100 {
                log.event(&BanEvent::Refused {
                    origin: Origin::Manual,
                    refusal: Refusal::Loopback("127.0.0.1/32".parse().unwrap()),
                });
            }
        });
        assert_eq!(lines.len(), REFUSALS_PER_WINDOW as usize, "{lines:?}");
        assert_eq!(lines[0]["kind"], "loopback");
    }
}

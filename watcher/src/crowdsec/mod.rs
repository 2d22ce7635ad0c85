//! CrowdSec: the fleet's bans through its Local API (LAPI), one more
//! origin of bans. Two halves, each enabled by its key in `[crowdsec]`:
//!
//! - the **bouncer** (`api_key`): pulls `GET /v1/decisions/stream`, all of
//!   it at start (`startup=true`), then what changed every `poll`, and
//!   applies `ban` decisions through the ban service as
//!   `crowdsec/<decision origin>` bans with their remaining time and the
//!   scenario as reason (bouncer.rs). It fails closed: while the LAPI is
//!   unreachable or answers garbage, bans in force stay (the kernel still
//!   expires them), it retries with backoff, says so in `status`, and once
//!   answered again re-syncs in full and reconciles.
//! - the **decision source** (`credentials_file`): every jail ban is pushed
//!   as an alert with its decision (pusher.rs), queued on disk while the
//!   LAPI cannot take it (spool.rs). CrowdSec's own bans are never pushed.
//!
//! LAPI keeps one stream position per bouncer key: each host needs its own
//! key (`cscli bouncers add mx1`), or hosts sharing one steal each other's
//! deltas.
pub mod api;
pub(crate) mod bouncer;
pub mod client;
pub mod credentials;
pub mod duration;
pub mod pusher;
pub mod spool;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::{sync::mpsc, task::JoinHandle};

pub use client::{Lapi, LapiError};
pub use credentials::{Credentials, Secret};

use crate::{
    ban::{BanService, Subscriber},
    config::CrowdSecConfig,
    status::CrowdSecStatus,
};

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A delta this large is a blocklist being inserted: LAPI hands out
/// deltas by creation time, and rows inserted while it answered can be
/// missed for good, so once the deltas are small again a full sync follows.
const BIG_DELTA: usize = 1000;

/// How often a full sync re-checks everything even when all went well
/// (heals whatever a delta missed): 60 polls, between 5 and 15 minutes.
fn resync_every(poll: Duration) -> Duration {
    (poll * 60).clamp(Duration::from_secs(300), Duration::from_secs(900))
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// What the tasks report, for `status`.
pub struct Shared {
    st: Mutex<CrowdSecStatus>,
    /// When the last pull was answered.
    synced_at: Mutex<Option<Instant>>,
}

impl Shared {
    fn new(cfg: &CrowdSecConfig) -> Self {
        Shared {
            st: Mutex::new(CrowdSecStatus {
                url: cfg.url.clone(),
                pulling: cfg.pulls(),
                pushing: cfg.credentials.is_some(),
                poll_ms: u64::try_from(cfg.poll.as_millis()).unwrap_or(u64::MAX),
                ..CrowdSecStatus::default()
            }),
            synced_at: Mutex::new(None),
        }
    }

    fn with(&self, f: impl FnOnce(&mut CrowdSecStatus)) {
        f(&mut self.st.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn status(&self) -> CrowdSecStatus {
        let mut s = self.st.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.last_sync_secs_ago = self
            .synced_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed().as_secs());
        s
    }

    fn synced(&self, full: bool, b: &bouncer::Bouncer) {
        *self.synced_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let now = now_rfc3339();
        self.with(|s| {
            s.connected = true;
            s.last_error = None;
            s.failing_since = None;
            if full {
                s.last_full_sync = Some(now.clone());
            }
            s.last_sync = Some(now);
            s.decisions_active = b.active() as u64;
            s.decisions_applied = b.counts.applied;
            s.decisions_refused = b.counts.refused;
            s.decisions_ignored = b.counts.ignored.clone();
            s.decisions_invalid = b.counts.invalid;
            s.bans_lifted = b.counts.lifted;
        });
    }

    fn failed(&self, e: &str) {
        self.with(|s| {
            if s.connected || s.failing_since.is_none() {
                s.failing_since = Some(now_rfc3339());
            }
            s.connected = false;
            s.last_error = Some(e.to_owned());
        });
    }

    fn push_queue(&self, n: usize) {
        self.with(|s| s.push_queue = n as u64);
    }

    fn push_dropped(&self, n: u64) {
        self.with(|s| s.push_dropped = n);
    }

    fn push_failed(&self, e: &str) {
        self.with(|s| s.push_error = Some(e.to_owned()));
    }

    fn pushed(&self, sent: usize, expired: usize, left: usize) {
        self.with(|s| {
            s.pushed += sent as u64;
            s.push_expired += expired as u64;
            s.push_queue = left as u64;
            s.push_error = None;
        });
    }
}

/// The CrowdSec side of a running agent.
pub struct CrowdSec {
    cfg: CrowdSecConfig,
    shared: Arc<Shared>,
    push: Mutex<Option<mpsc::UnboundedReceiver<spool::Pending>>>,
    push_tx: Option<mpsc::UnboundedSender<spool::Pending>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl CrowdSec {
    pub fn new(cfg: CrowdSecConfig) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let pushing = cfg.credentials.is_some();
        Arc::new(CrowdSec {
            shared: Arc::new(Shared::new(&cfg)),
            push: Mutex::new(pushing.then_some(rx)),
            push_tx: pushing.then_some(tx),
            cfg,
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// The ban service's subscriber that feeds the decision source (None
    /// when nothing is pushed). Give it to the service before it bans.
    pub fn subscriber(&self) -> Option<Arc<dyn Subscriber>> {
        self.push_tx
            .clone()
            .map(|tx| Arc::new(pusher::PushEvents(tx)) as Arc<dyn Subscriber>)
    }

    pub fn status(&self) -> CrowdSecStatus {
        self.shared.status()
    }

    /// Starts the bouncer and the decision source on the current tokio
    /// runtime. `state_dir`: where the push queue lives (None: a dry run,
    /// nothing is pushed).
    pub fn start(&self, svc: Arc<BanService>, state_dir: Option<&Path>) {
        let lapi = match Lapi::new(&self.cfg) {
            Ok(l) => Arc::new(l),
            Err(e) => {
                let msg = crate::error_chain(&e);
                log::error!("crowdsec: {msg}; not connecting");
                self.shared.failed(&msg);
                self.shared.push_failed(&msg);
                return;
            }
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if lapi.has_key() {
            log::info!(
                "crowdsec: pulling decisions from {} every {}",
                lapi.base(),
                humantime::format_duration(self.cfg.poll)
            );
            tasks.push(tokio::spawn(pull(
                lapi.clone(),
                svc,
                self.shared.clone(),
                self.cfg.poll,
            )));
        }
        let rx = self.push.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let (Some(rx), Some(dir)) = (rx, state_dir) {
            match spool::Spool::open(&dir.join(spool::FILE)) {
                Ok(sp) => {
                    log::info!(
                        "crowdsec: pushing jail bans to {}{}",
                        lapi.base(),
                        if sp.is_empty() {
                            String::new()
                        } else {
                            format!(" ({} queued from before)", sp.len())
                        }
                    );
                    tasks.push(tokio::spawn(pusher::run(lapi, rx, sp, self.shared.clone())));
                }
                Err(e) => {
                    let msg = crate::error_chain(&e);
                    log::error!("crowdsec: {msg}: jail bans are not pushed");
                    self.shared.push_failed(&msg);
                }
            }
        }
    }

    pub fn stop(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// A reload with a changed `[crowdsec]` section: said, not applied (the
/// keys and the stream position belong to this run).
pub fn note_reload(running: Option<&Arc<CrowdSec>>, new: Option<&CrowdSecConfig>) {
    if running.map(|c| &c.cfg) != new {
        log::warn!(
            "crowdsec: the [crowdsec] section changed; the change takes effect when the agent restarts"
        );
    }
}

/// The bouncer's loop: a full sync first, after every failure, after a
/// blocklist arrived in deltas and every [`resync_every`]; deltas in
/// between, one pull every `poll`.
async fn pull(lapi: Arc<Lapi>, svc: Arc<BanService>, shared: Arc<Shared>, poll: Duration) {
    let state = Arc::new(Mutex::new(bouncer::Bouncer::default()));
    let mut full = true;
    let mut first = true;
    let mut last_full = Instant::now();
    let mut after_big = false;
    let mut backoff = MIN_BACKOFF;
    let mut failures = 0u32;
    loop {
        let t0 = Instant::now();
        let wait = match lapi.stream(full).await {
            Ok(answer) => {
                let big = answer.new.len() + answer.deleted.len() >= BIG_DELTA;
                let (st, sv, sh) = (state.clone(), svc.clone(), shared.clone());
                let applied = tokio::task::spawn_blocking(move || {
                    let mut b = st.lock().unwrap_or_else(|p| p.into_inner());
                    let t = Instant::now();
                    let sync = if full {
                        b.full(&answer, &sv)
                    } else {
                        b.delta(&answer, &sv)
                    };
                    sh.synced(full, &b);
                    (sync, t.elapsed())
                })
                .await;
                match applied {
                    Ok((sync, took)) => {
                        if failures > 0 {
                            log::info!(
                                "crowdsec: {} answers again after {failures} failed pull(s)",
                                lapi.base()
                            );
                        }
                        if sync.changed() || (full && (first || failures > 0)) {
                            log::info!("crowdsec: {sync} in {took:.1?}");
                        } else {
                            log::debug!("crowdsec: {sync} in {took:.1?}");
                        }
                        if full {
                            last_full = t0;
                            after_big = false;
                        }
                        let heal = !full && after_big && !big;
                        after_big |= !full && big;
                        full = heal || last_full.elapsed() >= resync_every(poll);
                        if heal {
                            after_big = false;
                        }
                        first = false;
                        failures = 0;
                        backoff = MIN_BACKOFF;
                        poll.saturating_sub(t0.elapsed())
                    }
                    Err(e) => {
                        // Applying panicked: nothing half-done is trusted.
                        log::error!("crowdsec: applying decisions failed: {e}");
                        shared.failed("applying decisions failed");
                        full = true;
                        backoff
                    }
                }
            }
            Err(e) => {
                let msg = crate::error_chain(&e);
                failures += 1;
                // Said once, then every so often: an outage must not flood the log.
                if failures == 1 || failures.is_power_of_two() {
                    log::warn!(
                        "crowdsec: pulling decisions: {msg}{} (attempt {failures}; bans in force stay, retrying in {})",
                        if e.is_auth() {
                            " (the bouncer key is refused: see `cscli bouncers list`)"
                        } else {
                            ""
                        },
                        humantime::format_duration(backoff)
                    );
                }
                shared.failed(&msg);
                full = true;
                let w = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF.max(poll));
                w
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// `fail2xdp crowdsec check`: what was tried and how it went.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Check {
    pub url: String,
    /// None: no bouncer key configured.
    pub bouncer: Option<Result<String, String>>,
    /// None: no machine login configured.
    pub machine: Option<Result<String, String>>,
}

impl Check {
    pub fn ok(&self) -> bool {
        !matches!(self.bouncer, Some(Err(_))) && !matches!(self.machine, Some(Err(_)))
    }
}

/// Tests the connection and each configured key, touching nothing: the
/// bouncer key with a one-address query (its stream position is not
/// moved), the machine login by logging in.
pub async fn check(cfg: &CrowdSecConfig) -> Result<Check, LapiError> {
    let lapi = Lapi::new(cfg)?;
    let mut c = Check {
        url: cfg.url.clone(),
        ..Check::default()
    };
    let t = SystemTime::now();
    if lapi.has_key() {
        c.bouncer = Some(
            lapi.check_key()
                .await
                .map(|_| {
                    format!(
                        "bouncer key accepted ({} ms)",
                        t.elapsed().unwrap_or_default().as_millis()
                    )
                })
                .map_err(|e| crate::error_chain(&e)),
        );
    }
    if lapi.has_login() {
        let t = SystemTime::now();
        c.machine = Some(
            lapi.login()
                .await
                .map(|()| {
                    format!(
                        "machine login accepted ({} ms)",
                        t.elapsed().unwrap_or_default().as_millis()
                    )
                })
                .map_err(|e| crate::error_chain(&e)),
        );
    }
    Ok(c)
}

//! The agent: sources -> match stage -> jails -> ban service -> enforcer,
//! with the control socket, reload on SIGHUP and a clean stop on
//! SIGTERM/SIGINT (the XDP program and its maps stay pinned and keep
//! enforcing). [`run`] takes library options; the command line is the
//! binary's business.
mod engine;
mod exporter;
mod handler;
mod helpers;
mod matcher;
mod progress;
#[cfg(test)]
mod stage_costs;

use std::{
    path::PathBuf,
    sync::Arc,
    task::Poll,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

pub use engine::{Engine, JailSlot, LineCounts, from_unix_ns, unix_ns};
pub use handler::{Agent, AgentHandler, META_JAIL_RULES, META_JAILS, META_POLICY, jail_rules};
#[cfg(any(test, feature = "fuzzing"))]
pub use matcher::classify_alone;
pub use matcher::{
    Find, Found, Matched, Matching, Picked, Stage, YearReference, classify, find_all,
};

use crate::{
    ban::{BanService, LogEvents, Persist, Subscriber},
    closer::{Closer, Closing},
    config::{self, SourceConf},
    control,
    crowdsec::CrowdSec,
    enforcer::{Enforcer, KernelLog, XdpMode},
    instance::{AgentLock, Instance},
    metrics::{Endpoint, Metrics},
    notify,
    source::{self, SourceOptions},
    state::{PositionBook, Store},
};

/// How often counts and bans that ran out are purged.
const PURGE_EVERY: Duration = Duration::from_secs(30);
/// Chunks (of up to 256 KiB) queued per source between its reader (which
/// runs the match stage) and the jails before the reader waits: enough to
/// keep both busy, small enough that a replay does not buffer the file in
/// memory.
const SOURCE_QUEUE: usize = 8;

/// What `fail2xdp run` asks for.
#[derive(Debug, Clone)]
pub struct Options {
    pub instance: Instance,
    pub ifaces: Vec<String>,
    pub xdp_mode: XdpMode,
    /// None: the built-in configuration.
    pub config: Option<PathBuf>,
    /// Read log files from their start, where no position was saved.
    pub replay: bool,
    /// Start at the end of the log files, not where the last run stopped.
    pub from_end: bool,
    /// Decide bans, write none.
    pub dry_run: bool,
    /// Serve Prometheus metrics there.
    pub metrics: Option<Endpoint>,
    /// Show a replay's progress (stderr is a terminal).
    pub progress: bool,
}

/// Runs the agent until SIGTERM/SIGINT (or a `Stop` request); the XDP
/// program stays attached (pinned) when this returns. Everything that can
/// refuse to start (another agent on this instance, a bad configuration,
/// a locked store, a socket in use) is checked before the data plane is
/// touched. Once the program is loaded and attached, and before any thread
/// or the async runtime starts, the agent drops every capability but
/// [`crate::privs::KEPT`], so every thread runs with no more.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let ready = prepare(&opts)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("fail2xdp")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(opts, ready))
}

/// What start-up prepares on the main thread alone, with every capability.
struct Ready {
    _lock: AgentLock,
    cfg: config::Config,
    store: Option<Arc<Store>>,
    unavailable: Option<String>,
    recovered: Option<String>,
    positions: Option<PositionBook>,
    listener: control::Listener,
    metrics_listener: Option<std::net::TcpListener>,
    enforcer: Option<Enforcer>,
    /// Readers of the XDP program's log records, opened before the drop.
    kernel_logs: Vec<KernelLog>,
    /// The connection closer's helper, started before the drop (or why
    /// not); None when `close_connections` is off or in a dry run.
    closer: Option<Result<Closer, String>>,
}

/// Start-up up to the capability drop: lock, configuration, store, control
/// socket, XDP program loaded and attached, then [`crate::privs::drop_to_kept`].
/// Runs before any other thread exists (the stop and reload signals stay
/// blocked, pending, until the run loop's handlers take them).
fn prepare(opts: &Options) -> anyhow::Result<Ready> {
    let inst = &opts.instance;
    let lock = AgentLock::acquire(inst)?;
    // A bad configuration must change nothing running: load it before the
    // program in a pinned link is replaced.
    let cfg =
        config::load_or_builtin(opts.config.as_deref()).context("loading the configuration")?;
    // A store that cannot be used does not stop the agent: the maps keep
    // enforcing, status says what is wrong. A damaged file is moved aside,
    // never deleted; another agent holding it is a refusal to start.
    let (mut unavailable, mut recovered) = (None, None);
    let store = if opts.dry_run {
        None
    } else {
        match Store::open_recovering(&inst.state_dir) {
            Ok((s, r)) => {
                if let Some(r) = r {
                    log::error!(
                        "the state store was damaged ({}): moved it to {} and started a new one",
                        r.why,
                        r.moved_to.display()
                    );
                    recovered = Some(format!("moved to {} ({})", r.moved_to.display(), r.why));
                }
                Some(Arc::new(s))
            }
            Err(e @ crate::state::StateError::Locked { .. }) => {
                return Err(e).context("opening the state store");
            }
            Err(e) => {
                let why = crate::error_chain(&e);
                log::error!(
                    "the state store cannot be opened ({why}): running without it; bans are enforced but not recorded"
                );
                unavailable = Some(why);
                None
            }
        }
    };
    let positions = match &store {
        Some(s) => Some(PositionBook::open(s.clone()).context("opening the saved log positions")?),
        None => None,
    };
    let listener =
        control::bind_with(&inst.socket, cfg.readonly_group.as_ref()).context("control socket")?;
    let metrics_listener = match &opts.metrics {
        Some(ep) => Some(ep.bind()?),
        None => None,
    };
    // Only maps created now get these sizes; pinned maps keep theirs.
    let mut enf = Enforcer::load(&inst.pin_dir, &cfg.capacity).with_context(|| {
        format!(
            "loading the XDP program with maps under {}",
            inst.pin_dir.display()
        )
    })?;
    for iface in &opts.ifaces {
        enf.attach(iface, opts.xdp_mode)
            .with_context(|| format!("attaching to {iface}"))?;
    }
    // The ring buffers are mapped now, with every capability; reading them
    // later needs none.
    let kernel_logs = enf.take_kernel_logs();
    let closer = (cfg.close_connections && !opts.dry_run)
        .then(|| Closer::spawn().map_err(|e| format!("its helper process could not start: {e}")));
    match crate::privs::drop_to_kept()? {
        Some(kept) => log::info!(
            "capabilities dropped: keeping {} only",
            if kept.is_empty() {
                "none".to_string()
            } else {
                kept.join(",")
            }
        ),
        None => log::info!("running without capabilities: nothing to drop"),
    }
    Ok(Ready {
        _lock: lock,
        cfg,
        store,
        unavailable,
        recovered,
        positions,
        listener,
        metrics_listener,
        enforcer: (!opts.dry_run).then_some(enf),
        kernel_logs,
        closer,
    })
}

/// A source as the run loop sees it.
struct Input {
    conf: SourceConf,
    rx: mpsc::Receiver<Matched>,
    closed: bool,
}

async fn run_async(opts: Options, ready: Ready) -> anyhow::Result<()> {
    // First of all: a SIGTERM during start-up must stop the agent cleanly
    // once it is up, not kill it half-way (the default action).
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    release_signals();

    let inst = opts.instance.clone();
    let Ready {
        _lock,
        cfg,
        store,
        unavailable,
        recovered,
        positions,
        listener,
        metrics_listener,
        enforcer,
        kernel_logs,
        closer,
    } = ready;
    for l in kernel_logs {
        if let Err(e) = l.spawn() {
            log::warn!("the XDP program's log records cannot be read: {e}");
        }
    }
    let readonly_group = cfg.readonly_group.clone();

    let mut subscribers: Vec<Arc<dyn Subscriber>> = vec![Arc::new(LogEvents::default())];
    let crowdsec = cfg.crowdsec.clone().map(CrowdSec::new);
    subscribers.extend(crowdsec.as_ref().and_then(|c| c.subscriber()));
    let metrics = metrics_listener.as_ref().map(|_| Metrics::new());
    if let Some(m) = &metrics {
        subscribers.push(m.clone());
    }
    let closing = closer.map(|c| match c {
        Ok(c) => c.start(),
        Err(why) => Closing::unavailable(why),
    });
    if let Some(c) = &closing {
        subscribers.push(c.clone());
    }
    let service = Arc::new(BanService::new(
        enforcer,
        store.clone(),
        Persist::Background,
        Engine::policy(&cfg),
        subscribers,
    ));
    service.note_store_trouble(unavailable, recovered.clone());
    if recovered.is_some() {
        match service.adopt_maps() {
            Ok(n) => log::info!("recorded the {n} ban(s) the maps hold in the new state store"),
            Err(e) => log::error!(
                "recording the maps' bans in the new state store: {}",
                crate::error_chain(&e)
            ),
        }
    }
    let history = cfg.history;
    if let Some(s) = &store {
        handler::save_meta(s, &cfg);
    }
    let mut engine = Engine::new(cfg, service.clone());
    match service.restore() {
        Ok((_, jail_bans)) => engine.note_restored(&jail_bans),
        Err(e) => log::error!(
            "restoring bans from the state store: {}",
            crate::error_chain(&e)
        ),
    }
    // After the restore: the first full sync reconciles with what it put back.
    if let Some(c) = &crowdsec {
        c.start(
            service.clone(),
            (!opts.dry_run).then_some(inst.state_dir.as_path()),
        );
    }
    let (resync_tx, mut resync_rx) = mpsc::unbounded_channel();
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel();
    let mut agent = Agent::new(
        inst.clone(),
        engine,
        service.clone(),
        opts.config.clone(),
        opts.ifaces.clone(),
        resync_tx,
        stop_tx,
    );
    agent.readonly_group = readonly_group;
    agent.closing = closing.clone();
    let agent = Arc::new(agent);
    if let Some(c) = &crowdsec {
        agent.set_crowdsec(c.clone());
    }

    let src_opts = SourceOptions {
        journal_from_start: opts.replay,
        resume: !opts.from_end,
        ..SourceOptions::default()
    };
    let mut inputs: Vec<Input> = Vec::new();
    // A replayed log's yearless stamps are dated from its files'
    // modification times, not from today.
    let reference = if opts.replay {
        YearReference::FileModified
    } else {
        YearReference::Now
    };
    resync(
        &agent,
        &mut inputs,
        &src_opts,
        opts.replay,
        reference,
        positions.as_ref(),
    )
    .await;
    {
        let e = agent.engine();
        if e.slots.is_empty() {
            log::info!(
                "no jails in {}: enforcing manual bans, blocklists and CrowdSec decisions only",
                e.cfg.origin
            );
        } else {
            log::info!(
                "watching with {} jail(s) from {}{}",
                e.slots.len(),
                e.cfg.origin,
                if opts.dry_run {
                    " (dry run: no bans are written)"
                } else {
                    ""
                }
            );
        }
    }

    // Served only now: an answering socket means the sources are positioned,
    // so a line written after that is seen (tests and scripts rely on it).
    let handler: Arc<dyn control::Handler> = Arc::new(AgentHandler(agent.clone()));
    let serves = inst.pin_dir.clone();
    let (stop_serving, serving_stops) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async {
            let _ = serving_stops.await;
        };
        if let Err(e) = listener.serve(handler, serves, shutdown).await {
            log::error!("control socket stopped: {}", crate::error_chain(&e));
        }
    });
    let exporter = match (metrics_listener, metrics) {
        (Some(l), Some(m)) => Some(exporter::spawn(l, agent.clone(), m)),
        _ => None,
    };
    tell_ready(&inst, &agent).await;
    let replaying = if opts.replay && opts.progress {
        let sources = agent.engine().sources();
        progress::spawn(agent.clone(), sources)
    } else {
        None
    };

    let mut purge = tokio::time::interval(PURGE_EVERY);
    purge.tick().await;
    let mut batches: Vec<Matched> = Vec::new();
    let mut next_start = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            Some(()) = stop_rx.recv() => { log::info!("asked to stop on the control socket"); break; }
            _ = sighup.recv() => {
                let a = agent.clone();
                systemd(notify::reloading());
                // Building filters can take a while: off the async workers.
                match tokio::task::spawn_blocking(move || a.reload()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(m)) => log::error!("SIGHUP: configuration not reloaded:\n{m}"),
                    Err(e) => log::error!("SIGHUP: reload failed: {e}"),
                }
                systemd(notify::ready(&running_status(&agent)));
            }
            Some(()) = resync_rx.recv() => {
                // Sources are only stopped/started here; from_start applies to the first start only.
                resync(&agent, &mut inputs, &src_opts, false, reference, positions.as_ref()).await;
            }
            _ = purge.tick() => {
                let a = agent.clone();
                let before = SystemTime::now().checked_sub(history);
                let _ = tokio::task::spawn_blocking(move || {
                    a.engine().purge();
                    a.service.purge(before);
                }).await;
            }
            got = recv_any(&mut inputs, &mut batches, &mut next_start) => {
                if let Some(i) = got {
                    let conf = inputs[i].conf.clone();
                    let mut e = agent.engine();
                    for m in batches.drain(..) {
                        e.count(&conf, &m);
                    }
                }
            }
        }
    }

    systemd(notify::stopping());
    // No new requests; the ones being handled (the `Stop` that ended the
    // loop among them) are answered before the process exits.
    let _ = stop_serving.send(());
    if let Some(x) = exporter {
        x.abort();
    }
    if let Some(r) = replaying {
        r.abort();
        crate::logging::clear_progress();
    }
    let handles: Vec<_> = agent
        .sources
        .lock()
        .map(|mut s| s.drain(..).map(|(_, h)| h).collect())
        .unwrap_or_default();
    for h in &handles {
        h.stop();
    }
    // Readers blocked on a full channel notice the stop once it is gone.
    drop(inputs);
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h.join()).await;
    }
    if let Some(c) = &crowdsec {
        c.stop();
    }
    if let Some(c) = &closing {
        c.stop();
    }
    service.shutdown();
    // serve's own wait for answers is bounded; this bounds the rest.
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    log::info!("stopped; the XDP program keeps enforcing the current bans");
    Ok(())
}

/// What `systemctl status` shows beside the unit.
fn running_status(agent: &Agent) -> String {
    let e = agent.engine();
    let mode = if agent.service.dry_run() {
        " (dry run)"
    } else {
        ""
    };
    if e.slots.is_empty() {
        format!("enforcing manual bans and blocklists only{mode}")
    } else {
        format!(
            "watching with {} jail(s) on {}{mode}",
            e.slots.len(),
            agent.ifaces.join(", ")
        )
    }
}

/// Tells systemd (`Type=notify`) the agent is ready: the program is
/// attached, and the control socket answers (checked by asking it, as the
/// CLI would).
async fn tell_ready(inst: &Instance, agent: &Arc<Agent>) {
    let client = control::Client::new(inst);
    let answered = tokio::task::spawn_blocking(move || client.call(&control::Request::Ping))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| crate::error_chain(&e)));
    match answered {
        Ok(_) => systemd(notify::ready(&running_status(agent))),
        // Not ready: systemd's start timeout then fails the unit, which
        // is what should happen to an agent nobody can talk to.
        Err(e) => log::error!("the control socket does not answer its own agent: {e}"),
    }
}

fn systemd(r: Result<bool, notify::NotifyError>) {
    if let Err(e) = r {
        log::warn!("{}", crate::error_chain(&e));
    }
}

/// Lets the stop and reload signals through to the handlers just installed
/// (the binary holds them blocked from its first instruction, so one sent
/// during start-up waits for them instead of killing the agent). This
/// thread drives the agent for its whole life, so they reach it here.
fn release_signals() {
    // SAFETY: sigemptyset/sigaddset write only the local set; pthread_sigmask
    // reads it and changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Starts the sources the engine's jails read and stops the others.
async fn resync(
    agent: &Arc<Agent>,
    inputs: &mut Vec<Input>,
    opts: &SourceOptions,
    from_start: bool,
    reference: YearReference,
    positions: Option<&PositionBook>,
) {
    let (wanted, board) = {
        let e = agent.engine();
        (e.sources(), e.board())
    };
    let mut running = std::mem::take(&mut *agent.sources.lock().unwrap_or_else(|p| p.into_inner()));
    running.retain(|(c, h)| {
        let keep = wanted.contains(c);
        if !keep {
            h.stop();
        }
        keep
    });
    inputs.retain(|i| wanted.contains(&i.conf));
    for conf in wanted {
        if running.iter().any(|(c, _)| *c == conf) {
            continue;
        }
        let (tx, rx) = mpsc::channel(SOURCE_QUEUE);
        let mut o = opts.clone();
        o.positions = positions.map(|p| p.source(&conf.to_string()));
        // Reader + match stage on the source's thread -> this loop (the jails).
        let stage = Stage::new(conf.clone(), board.clone(), reference).deliver(tx);
        match source::spawn(conf.spec(from_start), o, stage).await {
            Ok(h) => {
                log::info!("reading {}", h.name());
                running.push((conf.clone(), h));
                inputs.push(Input {
                    conf,
                    rx,
                    closed: false,
                });
            }
            Err(e) => log::error!("source {conf}: {}", crate::error_chain(&e)),
        }
    }
    *agent.sources.lock().unwrap_or_else(|p| p.into_inner()) = running;
}

/// Waits for lines from any source; returns its index with its batches in
/// `out`. Sources are polled round-robin so a busy one cannot starve the rest.
async fn recv_any(inputs: &mut [Input], out: &mut Vec<Matched>, next: &mut usize) -> Option<usize> {
    std::future::poll_fn(|cx| {
        let n = inputs.len();
        for k in 0..n {
            let i = (*next + k) % n;
            let input = &mut inputs[i];
            if input.closed {
                continue;
            }
            match input.rx.poll_recv_many(cx, out, 16) {
                Poll::Ready(0) => input.closed = true,
                Poll::Ready(_) => {
                    *next = (i + 1) % n;
                    return Poll::Ready(Some(i));
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

//! The agent loop: sources -> timestamps -> filters -> jails -> enforcer, with
//! the control socket, reload on SIGHUP and a clean stop on SIGTERM/SIGINT
//! (the XDP program and its maps stay pinned and keep enforcing).
mod engine;
mod handler;
mod matcher;
#[cfg(test)]
mod stage_costs;
mod state_writer;

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
    task::Poll,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

pub use engine::{Engine, Verdict};
pub use handler::{AgentHandler, Shared};

use self::matcher::Matched;
use crate::{
    cli::{Global, RunArgs},
    config::{self, SourceConf},
    control,
    enforcer::Enforcer,
    source::{self, SourceOptions},
    state::{PositionBook, Store},
    timestamp::TimeParser,
};

/// How often counts and bans that ran out are purged.
const PURGE_EVERY: Duration = Duration::from_secs(30);
/// Chunks (of up to 256 KiB) queued per source between its reader (which
/// runs the match stage) and the jails before the reader waits: enough to
/// keep both busy, small enough that a replay does not buffer the file in
/// memory.
const SOURCE_QUEUE: usize = 8;

/// Runs the watcher until SIGTERM/SIGINT with the configuration cmd/run.rs
/// checked before attaching; the XDP program stays attached (pinned) when
/// this returns.
pub fn run(
    g: &Global,
    a: &RunArgs,
    cfg: config::Config,
    enforcer: Enforcer,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("fail2xdp")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(g, a, cfg, enforcer))?;
    Ok(ExitCode::SUCCESS)
}

/// A source as the run loop sees it.
struct Input {
    conf: SourceConf,
    rx: mpsc::Receiver<Matched>,
    /// Per source: year inference follows each file's own clock.
    tp: TimeParser,
    closed: bool,
}

async fn run_async(
    g: &Global,
    a: &RunArgs,
    cfg: config::Config,
    enforcer: Enforcer,
) -> anyhow::Result<()> {
    let store = if a.dry_run {
        None
    } else {
        Some(Arc::new(
            Store::open(&g.state_dir).context("opening the state store")?,
        ))
    };
    let positions = match &store {
        Some(s) => Some(PositionBook::open(s.clone()).context("opening the saved log positions")?),
        None => None,
    };
    let enforcer = if a.dry_run { None } else { Some(enforcer) };
    let mut engine = Engine::new(cfg, enforcer, store);
    let t0 = Instant::now();
    match engine.restore() {
        Ok((restored, present, skipped)) => log::info!(
            "restored {restored} ban(s) from the state store ({present} already in the maps, {skipped} skipped) in {:?}",
            t0.elapsed()
        ),
        Err(e) => log::error!("restoring bans from the state store: {e:#}"),
    }
    let (resync_tx, mut resync_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        engine: Mutex::new(engine),
        config_path: a.config.clone(),
        sources: Mutex::new(Vec::new()),
        resync: resync_tx,
    });

    let listener = control::bind(&g.socket).context("control socket")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;

    let opts = SourceOptions {
        journal_from_start: a.replay,
        resume: !a.from_end,
        ..SourceOptions::default()
    };
    let mut inputs: Vec<Input> = Vec::new();
    resync(&shared, &mut inputs, &opts, a.replay, positions.as_ref()).await;
    {
        let e = shared.engine();
        log::info!(
            "watching with {} jail(s) from {}{}",
            e.slots.len(),
            e.cfg.origin,
            if e.dry_run() {
                " (dry run: no bans are written)"
            } else {
                ""
            }
        );
    }

    // Served only now: an answering socket means the sources are positioned,
    // so a line written after that is seen (tests and scripts rely on it).
    let handler: Arc<dyn control::Handler> = Arc::new(AgentHandler(shared.clone()));
    let server = tokio::spawn(async move {
        if let Err(e) = listener.serve(handler).await {
            log::error!("control socket stopped: {e}");
        }
    });

    let mut purge = tokio::time::interval(PURGE_EVERY);
    purge.tick().await;
    let mut batches: Vec<Matched> = Vec::new();
    let mut next_start = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                let s = shared.clone();
                // Building filters can take a while: off the async workers.
                match tokio::task::spawn_blocking(move || s.reload()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(m)) => log::error!("SIGHUP: configuration not reloaded:\n{m}"),
                    Err(e) => log::error!("SIGHUP: reload failed: {e}"),
                }
            }
            Some(()) = resync_rx.recv() => {
                // Sources are only stopped/started here; from_start applies to the first start only.
                resync(&shared, &mut inputs, &opts, false, positions.as_ref()).await;
            }
            _ = purge.tick() => {
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || s.engine().purge()).await;
            }
            got = recv_any(&mut inputs, &mut batches, &mut next_start) => {
                if let Some(i) = got {
                    let input = &mut inputs[i];
                    let mut e = shared.engine();
                    for m in batches.drain(..) {
                        e.ingest_matched(&input.conf, &m.chunk, m.found, &mut input.tp);
                    }
                }
            }
        }
    }

    server.abort();
    let handles: Vec<_> = shared
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
    shared.engine().shutdown();
    let _ = server.await;
    log::info!("stopped; the XDP program keeps enforcing the current bans");
    Ok(())
}

/// Starts the sources the engine's jails read and stops the others.
async fn resync(
    shared: &Arc<Shared>,
    inputs: &mut Vec<Input>,
    opts: &SourceOptions,
    from_start: bool,
    positions: Option<&PositionBook>,
) {
    let (wanted, board) = {
        let e = shared.engine();
        (e.sources(), e.board())
    };
    let mut running =
        std::mem::take(&mut *shared.sources.lock().unwrap_or_else(|p| p.into_inner()));
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
        let stage = matcher::stage(conf.clone(), tx, board.clone());
        match source::spawn(conf.spec(from_start), o, stage).await {
            Ok(h) => {
                log::info!("reading {}", h.name());
                running.push((conf.clone(), h));
                inputs.push(Input {
                    conf,
                    rx,
                    tp: TimeParser::new(),
                    closed: false,
                });
            }
            Err(e) => log::error!("source {conf}: {e}"),
        }
    }
    *shared.sources.lock().unwrap_or_else(|p| p.into_inner()) = running;
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

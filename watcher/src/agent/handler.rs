//! The control socket's side of the agent: one `apply` per request. Status,
//! explain and list are built by the same functions the CLI uses when no
//! agent runs (status.rs, state/explain.rs), from a read-only handle on the
//! maps; bans and unbans go to the ban service. No request holds the
//! engine while it reads the store or waits for an fsync.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde_json::Value;

use super::engine::Engine;
use crate::{
    addr::parse_net,
    ban::{
        BanService, FromJail, ImportSpec, JailBan, JailRules, ManualBan, Origin, Outcome,
        UnbanOutcome, describe,
    },
    config::{self, JailConfig, SourceConf},
    control::{Handler, Request, Response},
    enforcer::Enforcer,
    instance::Instance,
    source::SourceHandle,
    state::{Explanation, Tracking},
    status::{AgentStatus, SourceStatus, Status, listing},
};

/// Blocklist imports being sent in parts, at most this many at once...
const MAX_STAGED: usize = 4;
/// ... and this many networks in all (a bound on the agent's memory).
const MAX_STAGED_NETS: usize = 20_000_000;
/// An import whose parts stopped coming is dropped after this long.
const STAGED_TTL: Duration = Duration::from_secs(600);

struct Staged {
    spec: ImportSpec,
    nets: Vec<IpNet>,
    touched: Instant,
}

/// What the run loop and the control handler share.
pub struct Agent {
    pub instance: Instance,
    pub engine: Mutex<Engine>,
    pub service: Arc<BanService>,
    pub config_path: Option<PathBuf>,
    pub ifaces: Vec<String>,
    /// Running sources, for their statistics; the loop owns their receivers.
    pub sources: Mutex<Vec<(SourceConf, SourceHandle)>>,
    /// Tells the run loop to start/stop sources after a reload.
    pub resync: tokio::sync::mpsc::UnboundedSender<()>,
    /// Tells the run loop to stop (`Request::Stop`).
    pub stop: tokio::sync::mpsc::UnboundedSender<()>,
    staged: Mutex<HashMap<u64, Staged>>,
    next_import: Mutex<u64>,
    crowdsec: std::sync::OnceLock<Arc<crate::crowdsec::CrowdSec>>,
    /// The control socket's read-only group, as bound at start.
    pub readonly_group: Option<crate::control::ReadOnlyGroup>,
    /// The connection closer, when `close_connections` was on at start.
    pub closing: Option<Arc<crate::closer::Closing>>,
}

impl Agent {
    pub fn new(
        instance: Instance,
        engine: Engine,
        service: Arc<BanService>,
        config_path: Option<PathBuf>,
        ifaces: Vec<String>,
        resync: tokio::sync::mpsc::UnboundedSender<()>,
        stop: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> Self {
        Agent {
            instance,
            engine: Mutex::new(engine),
            service,
            config_path,
            ifaces,
            sources: Mutex::new(Vec::new()),
            resync,
            stop,
            staged: Mutex::new(HashMap::new()),
            next_import: Mutex::new(1),
            crowdsec: std::sync::OnceLock::new(),
            readonly_group: None,
            closing: None,
        }
    }

    /// The CrowdSec bouncer and decision source, for `status`.
    pub fn set_crowdsec(&self, c: Arc<crate::crowdsec::CrowdSec>) {
        let _ = self.crowdsec.set(c);
    }

    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        // A panic while holding the lock leaves counters, not invariants, half
        // updated: keep serving.
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sources(&self) -> MutexGuard<'_, Vec<(SourceConf, SourceHandle)>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds the new configuration completely, then swaps it in; on any
    /// problem the running configuration stays.
    pub fn reload(&self) -> Result<String, String> {
        let cfg = config::load_or_builtin(self.config_path.as_deref())
            .map_err(|e| crate::error_chain(&e))?;
        let msg = format!("reloaded {}: {} jail(s)", cfg.origin, cfg.jails.len());
        if let Some(s) = self.service.store() {
            save_meta(s, &cfg);
        }
        crate::crowdsec::note_reload(self.crowdsec.get(), cfg.crowdsec.as_ref());
        if cfg.close_connections != self.closing.is_some() && !self.service.dry_run() {
            log::warn!(
                "close_connections changed: it takes effect at the next start (its helper starts before capabilities are dropped)"
            );
        }
        if cfg.readonly_group != self.readonly_group {
            log::warn!(
                "[control] readonly_group changed: it takes effect at the next start (the socket was bound before capabilities were dropped)"
            );
        }
        self.engine().apply_config(cfg);
        let _ = self.resync.send(());
        log::info!("{msg}");
        Ok(msg)
    }

    /// The agent's part of the status (the engine is held only to copy
    /// its counters).
    pub fn agent_status(&self) -> AgentStatus {
        let running: Vec<(SourceConf, String, crate::source::SourceStats)> = self
            .sources()
            .iter()
            .map(|(c, h)| (c.clone(), h.name().to_string(), h.stats()))
            .collect();
        let (jails, config, uptime, counts) = {
            let e = self.engine();
            (
                e.jail_status(),
                e.cfg.origin.clone(),
                e.started.elapsed().unwrap_or_default().as_secs(),
                running
                    .iter()
                    .map(|(c, _, _)| e.line_counts(c))
                    .collect::<Vec<_>>(),
            )
        };
        let sources = running
            .into_iter()
            .zip(counts)
            .map(|((c, name, s), n)| SourceStatus {
                source: c.to_string(),
                name,
                lines: s.lines,
                counted: n.counted,
                matched: n.matched,
                replaced_invalid_utf8: s.replaced_invalid_utf8,
                replaced_nul: s.replaced_nul,
                skipped_too_long: s.skipped_too_long,
                skipped_unreadable: s.skipped_unreadable,
                files_opened: s.files_opened,
                rotations: s.rotations,
                truncations: s.truncations,
            })
            .collect();
        AgentStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: uptime,
            config,
            dry_run: self.service.dry_run(),
            ifaces: self.ifaces.clone(),
            jails,
            sources,
            bans: self.service.stats(),
            store: self.service.health(),
            crowdsec: self.crowdsec.get().map(|c| c.status()),
            capabilities: crate::privs::effective(),
            readonly_group: self.readonly_group.as_ref().map(|g| g.name.clone()),
            connections: self.closing.as_ref().map(|c| c.status()),
        }
    }

    fn status(&self, jail: Option<&str>) -> Response {
        let st = Status::gather(&self.instance, Some(self.agent_status()));
        if let Some(j) = jail
            && st.jail(j).is_none()
        {
            let names: Vec<String> = st
                .agent
                .iter()
                .flat_map(|a| a.jails.iter().map(|j| j.name.clone()))
                .collect();
            return Response::error(format!(
                "no jail named {} (jails: {})",
                j.escape_default(),
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ));
        }
        json(&st)
    }

    fn explain(&self, target: &str) -> Response {
        let net = match parse_net(target) {
            Ok(n) => n,
            Err(e) => return Response::error(e.to_string()),
        };
        // Failures still being counted, per jail, for the net each jail would ban.
        let tracking: Vec<Tracking> = {
            let e = self.engine();
            e.slots
                .iter()
                .filter_map(|s| {
                    let key = if net.prefix_len() == net.max_prefix_len() {
                        s.jail.rules().net_of(net.addr())
                    } else {
                        net
                    };
                    s.jail.host(&key).map(|h| Tracking {
                        jail: s.conf.name.to_string(),
                        net: key.to_string(),
                        failures: h.times.len() as u64,
                        maxretry: u64::from(s.jail.rules().maxretry),
                        total: u64::from(h.total),
                        evidence: h.evidence.to_vec(),
                    })
                })
                .collect()
        };
        self.service.flush();
        let enf = Enforcer::open(&self.instance.pin_dir).ok();
        match Explanation::gather(self.service.store().map(|s| &**s), enf.as_ref(), &net) {
            Ok(mut ex) => {
                ex.tracking = tracking;
                json(&ex)
            }
            Err(e) => Response::error(crate::error_chain(&e)),
        }
    }

    fn list(&self) -> Response {
        self.service.flush();
        let enf = match Enforcer::open(&self.instance.pin_dir) {
            Ok(e) => e,
            Err(e) => return Response::error(crate::error_chain(&e)),
        };
        match listing(self.service.store().map(|s| &**s), &enf) {
            Ok(v) => json(&v),
            Err(e) => Response::error(crate::error_chain(&e)),
        }
    }

    fn ban(&self, mb: &ManualBan, take: FromJail) -> Response {
        if self.service.dry_run() {
            return Response::error("this agent runs with --dry-run: it writes no bans");
        }
        let jail = mb.origin.jail().map(|j| j.as_str().to_owned());
        let rules = jail
            .as_deref()
            .and_then(|j| self.engine().slot_by_name(j).map(|s| jail_rules(&s.conf)));
        if let (Some(j), None) = (&jail, &rules)
            && take.any()
        {
            return Response::error(self.no_such_jail(j));
        }
        let order = match mb.order_with(take, rules.as_ref()) {
            Ok(o) => o,
            Err(e) => return Response::error(e),
        };
        let outcome = self.service.ban(vec![order]).pop();
        // A ban in a jail's name is that jail's: it stops counting the
        // network's failures while the ban lasts, as after its own ban.
        if let (Some(j), Some(Outcome::Banned(a))) = (&jail, &outcome) {
            self.engine().note_restored(&[JailBan {
                jail: j.clone(),
                net: a.net,
                expires_at: a.expires_at,
            }]);
        }
        // Durable before the operator is told.
        self.service.flush();
        match outcome.as_ref().map(describe) {
            Some(Ok(m)) => Response::ok(m),
            Some(Err(m)) => Response::error(m),
            None => Response::error("no outcome"),
        }
    }

    fn unban(&self, target: &str) -> Response {
        let net = match parse_net(target) {
            Ok(n) => n,
            Err(e) => return Response::error(e.to_string()),
        };
        match self.service.unban(net, None) {
            Ok(o) => {
                if let UnbanOutcome::Lifted { net, .. } = &o {
                    self.engine().forget(net);
                }
                json(&o)
            }
            Err(e) => Response::error(crate::error_chain(&e)),
        }
    }

    fn no_such_jail(&self, j: &str) -> String {
        let names: Vec<String> = self
            .engine()
            .slots
            .iter()
            .map(|s| s.conf.name.to_string())
            .collect();
        format!(
            "no jail named {} (jails: {})",
            j.escape_default(),
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )
    }

    fn unban_origin(&self, target: &str, origin: &Origin) -> Response {
        let net = match parse_net(target) {
            Ok(n) => n,
            Err(e) => return Response::error(e.to_string()),
        };
        if let Some(j) = origin.jail()
            && self.engine().slot_by_name(j.as_str()).is_none()
        {
            return Response::error(self.no_such_jail(j.as_str()));
        }
        match self.service.unban(net, Some(origin)) {
            Ok(o) => {
                if let UnbanOutcome::Lifted { net, .. } | UnbanOutcome::StillBanned { net, .. } = &o
                {
                    self.engine().forget(net);
                }
                json(&o)
            }
            Err(e) => Response::error(crate::error_chain(&e)),
        }
    }

    fn unban_all(&self, origin: Option<&Origin>) -> Response {
        match self.service.unban_all(origin) {
            Ok(r) => {
                let mut e = self.engine();
                for n in &r.lifted_nets {
                    e.forget(n);
                }
                drop(e);
                json(&r)
            }
            Err(e) => Response::error(crate::error_chain(&e)),
        }
    }

    fn jail_rules(&self) -> Response {
        let rules: Vec<JailRules> = self
            .engine()
            .slots
            .iter()
            .map(|s| jail_rules(&s.conf))
            .collect();
        json(&rules)
    }

    fn staged(&self) -> MutexGuard<'_, HashMap<u64, Staged>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn import_begin(&self, spec: ImportSpec) -> Response {
        if self.service.dry_run() {
            return Response::error("this agent runs with --dry-run: it writes no bans");
        }
        if let Err(e) = spec.check() {
            return Response::error(e);
        }
        let mut staged = self.staged();
        staged.retain(|_, s| s.touched.elapsed() < STAGED_TTL);
        if staged.len() >= MAX_STAGED {
            return Response::error(format!(
                "{MAX_STAGED} imports are already being sent; try again when they are done"
            ));
        }
        let id = {
            let mut n = self.next_import.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        staged.insert(
            id,
            Staged {
                spec,
                nets: Vec::new(),
                touched: Instant::now(),
            },
        );
        Response::Json(Value::from(id))
    }

    fn import_part(&self, id: u64, nets: &[String]) -> Response {
        let mut staged = self.staged();
        let total: usize = staged.values().map(|s| s.nets.len()).sum();
        let Some(s) = staged.get_mut(&id) else {
            return Response::error(format!("no import {id} is being sent"));
        };
        if total + nets.len() > MAX_STAGED_NETS {
            staged.remove(&id);
            return Response::error(format!(
                "imports being sent would hold more than {MAX_STAGED_NETS} networks"
            ));
        }
        for n in nets {
            match parse_net(n) {
                Ok(net) => s.nets.push(net),
                Err(e) => return Response::error(e.to_string()),
            }
        }
        s.touched = Instant::now();
        Response::ok("")
    }

    fn import_commit(&self, id: u64) -> Response {
        let Some(s) = self.staged().remove(&id) else {
            return Response::error(format!("no import {id} is being sent"));
        };
        match self.service.import(&s.spec, &s.nets) {
            Ok(r) => json(&r),
            Err(e) => Response::error(crate::error_chain(&e)),
        }
    }

    fn allow(&self, target: &str, add: bool) -> Response {
        let net = match parse_net(target) {
            Ok(n) => n,
            Err(e) => return Response::error(e.to_string()),
        };
        let r = if add {
            self.service
                .allow_add(&net)
                .map(|()| format!("allowlisted {net}"))
        } else {
            self.service.allow_del(&net).map(|had| {
                if had {
                    format!("removed {net} from the allowlist")
                } else {
                    format!("{net} was not allowlisted")
                }
            })
        };
        match r {
            Ok(m) => Response::ok(m),
            Err(e) => Response::error(crate::error_chain(&e)),
        }
    }

    /// One request, one answer.
    pub fn apply(&self, req: Request) -> Response {
        match req {
            Request::Status { jail } => self.status(jail.as_deref()),
            Request::AgentStatus => json(&self.agent_status()),
            Request::Explain { target } => self.explain(&target),
            Request::List => self.list(),
            Request::Ban(mb) => self.ban(&mb, FromJail::default()),
            Request::BanFromJail { ban, take } => self.ban(&ban, take),
            Request::Unban { target } => self.unban(&target),
            Request::UnbanOrigin { target, origin } => self.unban_origin(&target, &origin),
            Request::UnbanAll { origin } => self.unban_all(origin.as_ref()),
            Request::JailRules => self.jail_rules(),
            Request::ImportBegin(spec) => self.import_begin(spec),
            Request::ImportPart { id, nets } => self.import_part(id, &nets),
            Request::ImportCommit { id } => self.import_commit(id),
            Request::AllowAdd { target } => self.allow(&target, true),
            Request::AllowDel { target } => self.allow(&target, false),
            Request::Reload => match self.reload() {
                Ok(m) => Response::ok(m),
                Err(m) => Response::error(format!("configuration not reloaded:\n{m}")),
            },
            Request::Ping => Response::ok(format!(
                "fail2xdp {} (pid {})",
                env!("CARGO_PKG_VERSION"),
                std::process::id()
            )),
            Request::Stop => {
                let _ = self.stop.send(());
                Response::ok("stopping")
            }
        }
    }
}

/// Where the agent saves its policy, for the CLI's guard when no agent runs.
pub const META_POLICY: &str = "policy";
/// Where the agent saves its jails' names, for `status JAIL` when no agent runs.
pub const META_JAILS: &str = "jails";

/// Where the agent saves its jails' rules, for `get` and `ban --jail`
/// when no agent runs.
pub const META_JAIL_RULES: &str = "jail_rules";

/// A jail's ban settings, as the CLI sees them.
pub fn jail_rules(j: &JailConfig) -> JailRules {
    let r = &j.rules;
    JailRules {
        name: j.name.to_string(),
        maxretry: r.maxretry,
        findtime_secs: r.findtime.as_secs(),
        bantime_secs: r.bantime.map(|d| d.as_secs()),
        increment_factor: r.increment.map(|i| i.factor),
        increment_max_secs: r.increment.and_then(|i| i.max).map(|d| d.as_secs()),
        ports: j.ports.0.clone(),
    }
}

/// Saves what the CLI needs to know about the configuration when no agent runs.
pub fn save_meta(store: &crate::state::Store, cfg: &crate::config::Config) {
    let names: Vec<String> = cfg.jails.iter().map(|j| j.name.to_string()).collect();
    let rules: Vec<JailRules> = cfg.jails.iter().map(jail_rules).collect();
    if let Err(e) = store
        .set_meta(META_POLICY, &Engine::policy(cfg))
        .and_then(|()| store.set_meta(META_JAILS, &names))
        .and_then(|()| store.set_meta(META_JAIL_RULES, &rules))
    {
        log::warn!(
            "saving the configuration's policy for the CLI: {}",
            crate::error_chain(&e)
        );
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_value(v) {
        Ok(v) => Response::Json(v),
        Err(e) => Response::error(format!("encoding the answer: {e}")),
    }
}

/// The control socket handler.
pub struct AgentHandler(pub Arc<Agent>);

impl Handler for AgentHandler {
    fn handle(&self, req: Request) -> Response {
        self.0.apply(req)
    }
}

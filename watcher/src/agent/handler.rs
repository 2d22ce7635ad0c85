//! The control socket's side of the agent: status, explain, ban/unban,
//! reload and list, answered from the engine the run loop feeds.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use serde_json::{Value, json};

use super::engine::{Engine, unix_ns};
use crate::{
    addr::{self, PortSet},
    config::{self, SourceConf},
    control::{Handler, Request, Response},
    enforcer::BanRequest,
    source::SourceHandle,
    state::{BanRecord, Explanation},
};

/// What the run loop and the control handler share.
pub struct Shared {
    pub engine: Mutex<Engine>,
    pub config_path: Option<PathBuf>,
    /// Running sources, for their statistics; the loop owns their receivers.
    pub sources: Mutex<Vec<(SourceConf, SourceHandle)>>,
    /// Tells the run loop to start/stop sources after a reload.
    pub resync: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Shared {
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
        let cfg =
            config::load_or_builtin(self.config_path.as_deref()).map_err(|e| e.to_string())?;
        let msg = format!("reloaded {}: {} jail(s)", cfg.origin, cfg.jails.len());
        self.engine().apply_config(cfg);
        let _ = self.resync.send(());
        log::info!("{msg}");
        Ok(msg)
    }

    fn status(&self, jail: Option<&str>) -> Response {
        let e = self.engine();
        let mut jails = Vec::new();
        for s in &e.slots {
            if jail.is_some_and(|j| j != s.conf.name) {
                continue;
            }
            let st = &s.jail.stats;
            let r = s.jail.rules();
            jails.push(json!({
                "name": s.conf.name,
                "filters": s.conf.filters.iter().map(|f| f.name().to_string()).collect::<Vec<_>>(),
                "sources": s.conf.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "lines": st.lines,
                "failures": st.failures,
                "ignored": st.ignored,
                "current_bans": s.jail.current_bans(),
                "total_bans": st.total_bans,
                "tracked_hosts": s.jail.tracked_hosts(),
                "evictions": s.jail.evictions(),
                "refused": st.refused,
                "stale": st.stale,
                "errors": st.errors,
                "maxretry": r.maxretry,
                "findtime_secs": r.findtime.as_secs(),
                "bantime_secs": r.bantime.map(|d| d.as_secs()),
                "ports": s.conf.ports.to_string(),
            }));
        }
        if let Some(j) = jail
            && jails.is_empty()
        {
            return Response::error(format!("no jail named {j}"));
        }
        let data_plane = match e.enforcer.as_ref().map(|enf| enf.stats()) {
            Some(Ok(s)) => crate::enforcer::report::stats_json(&s),
            Some(Err(err)) => json!({ "error": err.to_string() }),
            None => Value::Null,
        };
        let config = e.cfg.origin.clone();
        let dry_run = e.dry_run();
        let uptime = e.started.elapsed().unwrap_or_default().as_secs();
        drop(e);
        let sources: Vec<Value> = self
            .sources()
            .iter()
            .map(|(c, h)| {
                let s = h.stats();
                json!({
                    "source": c.to_string(),
                    "name": h.name(),
                    "lines": s.lines,
                    "skipped_invalid_utf8": s.skipped_invalid_utf8,
                    "skipped_too_long": s.skipped_too_long,
                    "skipped_nul": s.skipped_nul,
                    "files_opened": s.files_opened,
                    "rotations": s.rotations,
                    "truncations": s.truncations,
                })
            })
            .collect();
        Response::Json(json!({
            "config": config,
            "dry_run": dry_run,
            "uptime_secs": uptime,
            "jails": jails,
            "sources": sources,
            "data_plane": data_plane,
        }))
    }

    fn explain(&self, target: &str) -> Response {
        let net = match addr::parse_net(target) {
            Ok(n) => n,
            Err(e) => return Response::error(e.to_string()),
        };
        let e = self.engine();
        // Failures still being counted, per jail, for the net each jail would ban.
        let tracking: Vec<Value> = e
            .slots
            .iter()
            .filter_map(|s| {
                let key = if net.prefix_len() == net.max_prefix_len() {
                    s.jail.rules().net_of(net.addr())
                } else {
                    net
                };
                s.jail.host(&key).map(|h| {
                    json!({
                        "jail": s.conf.name,
                        "net": key.to_string(),
                        "failures": h.times.len(),
                        "maxretry": s.jail.rules().maxretry,
                        "total": h.total,
                        "evidence": h.evidence.to_vec(),
                    })
                })
            })
            .collect();
        let Some(store) = e.store.clone() else {
            return Response::Json(
                json!({ "target": net.to_string(), "bans": [], "tracking": tracking }),
            );
        };
        if let Some(w) = e.writer() {
            w.flush();
        }
        let mut ex = match Explanation::from_store(&store, &net) {
            Ok(x) => x,
            Err(err) => return Response::error(err.to_string()),
        };
        if let Some(enf) = e.enforcer.as_ref() {
            ex.fill_drops(|n| enf.get(n).ok().flatten().map(|b| b.drops));
        }
        drop(e);
        let mut v = match serde_json::to_value(&ex) {
            Ok(v) => v,
            Err(err) => return Response::error(err.to_string()),
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("tracking".into(), Value::Array(tracking));
        }
        Response::Json(v)
    }

    fn ban(
        &self,
        target: &str,
        ttl_secs: Option<u64>,
        ports: Option<&str>,
        jail: &str,
        reason: Option<&str>,
        force: bool,
    ) -> Response {
        let net = match addr::parse_net(target) {
            Ok(n) => n,
            Err(e) => return Response::error(e.to_string()),
        };
        let ports = match ports.map(PortSet::parse).transpose() {
            Ok(p) => p.unwrap_or_else(PortSet::all),
            Err(e) => return Response::error(e.to_string()),
        };
        let ttl = ttl_secs.map(Duration::from_secs);
        let mut e = self.engine();
        if let Err(err) = e.global_guard().check(&net, force) {
            return Response::error(err.to_string());
        }
        let Some(enf) = e.enforcer.as_mut() else {
            return Response::error("the agent runs with --dry-run: it writes no bans");
        };
        let req = BanRequest {
            net,
            ttl,
            ports: ports.clone(),
            jail: jail.to_string(),
            mode: Default::default(),
        };
        if let Err(err) = enf.ban(&req) {
            return Response::error(err.to_string());
        }
        let previous = e.previous(net);
        e.note_manual_ban(net);
        let expires = ttl.map(|t| unix_ns(SystemTime::now() + t));
        if let Some(s) = e.slots.iter_mut().find(|s| s.conf.name == jail) {
            s.jail.note_ban(net, expires);
        }
        let mut rec = BanRecord::manual(net, jail, reason, ttl, ports.0.clone());
        rec.times_banned = previous.saturating_add(1);
        if let Some(w) = e.writer() {
            w.record(rec);
            w.flush();
        }
        Response::ok(format!(
            "banned {net} ({}) for {}",
            if ports.is_all() {
                "all ports".to_string()
            } else {
                format!("ports {ports}")
            },
            ttl.map_or_else(|| "ever".to_string(), addr::format_duration)
        ))
    }

    fn unban(&self, target: &str) -> Response {
        let net = match addr::parse_net(target) {
            Ok(n) => n,
            Err(e) => return Response::error(e.to_string()),
        };
        let mut e = self.engine();
        let removed = match e.enforcer.as_mut() {
            Some(enf) => match enf.unban(&net) {
                Ok(r) => r,
                Err(err) => return Response::error(err.to_string()),
            },
            None => false,
        };
        e.forget(&net);
        if let Some(w) = e.writer() {
            w.remove(net);
            w.flush();
        }
        if removed {
            Response::ok(format!("unbanned {net}"))
        } else {
            Response::ok(format!("{net} was not banned"))
        }
    }

    fn list(&self) -> Response {
        let e = self.engine();
        let Some(enf) = e.enforcer.as_ref() else {
            // Dry run: the bans the jails decided.
            let now = unix_ns(SystemTime::now());
            let v: Vec<Value> = e
                .slots
                .iter()
                .flat_map(|s| {
                    s.jail.bans().map(move |(n, exp)| {
                        json!({
                            "net": n.to_string(), "jail": s.conf.name, "dry_run": true,
                            "remaining_secs": exp.map(|x| ((x - now).max(0) / 1_000_000_000) as u64),
                        })
                    })
                })
                .collect();
            return Response::Json(Value::Array(v));
        };
        let bans = match enf.list() {
            Ok(b) => b,
            Err(err) => return Response::error(err.to_string()),
        };
        let mut reasons: HashMap<ipnet::IpNet, String> = HashMap::new();
        if let Some(store) = e.store.as_ref() {
            if let Some(w) = e.writer() {
                w.flush();
            }
            let _ = store.for_each(|r| {
                reasons.insert(r.net, r.reason);
            });
        }
        let v: Vec<Value> = bans
            .iter()
            .map(|b| {
                json!({
                    "net": b.net.to_string(),
                    "jail": b.jail,
                    "remaining_secs": b.remaining.map(|d| d.as_secs()),
                    "expired": b.expired,
                    "created": jiff::Timestamp::try_from(b.created).map(|t| t.to_string()).unwrap_or_default(),
                    "ports": b.ports.0,
                    "drops": b.drops,
                    "reason": reasons.get(&b.net),
                })
            })
            .collect();
        Response::Json(Value::Array(v))
    }
}

/// The control socket handler.
pub struct AgentHandler(pub Arc<Shared>);

impl Handler for AgentHandler {
    fn handle(&self, req: Request) -> Response {
        let s = &self.0;
        match req {
            Request::Status { jail } => s.status(jail.as_deref()),
            Request::Explain { addr } => s.explain(&addr),
            Request::Ban {
                target,
                ttl_secs,
                ports,
                jail,
                reason,
                force,
            } => s.ban(
                &target,
                ttl_secs,
                ports.as_deref(),
                &jail,
                reason.as_deref(),
                force,
            ),
            Request::Unban { target } => s.unban(&target),
            Request::Reload => match s.reload() {
                Ok(m) => Response::ok(m),
                Err(m) => Response::error(format!("configuration not reloaded:\n{m}")),
            },
            Request::List => s.list(),
        }
    }
}

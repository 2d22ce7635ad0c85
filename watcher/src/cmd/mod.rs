//! One file per command family; each takes validated library types (the
//! command line is cli.rs's) and prints the result. A command goes through
//! the running agent when there is one, else it works on the maps and the
//! store itself, through the same library code.
pub mod allow;
pub mod ban;
pub mod check_config;
mod check_fail2ban;
pub mod client;
pub mod crowdsec;
pub mod detach;
pub mod import_fail2ban;
pub mod install_systemd;
pub mod logtest;
mod logtest_f2b;
mod progress;
pub mod run;
pub mod show;
pub mod top;
mod top_view;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fail2xdp::{
    agent::META_POLICY,
    ban::{BanService, Persist, Policy},
    control::{Client, Request, Response},
    enforcer::Enforcer,
    instance::Instance,
    state::{StateError, Store},
    status::DataPlane,
};

/// How a command reaches this instance.
pub enum Via {
    /// An agent runs: talk to it.
    Agent(Client),
    /// No agent runs: act on the maps and the store directly.
    Local,
}

/// The agent of `inst` if one runs (its lock is held, or its socket
/// answers), else `Local`.
pub fn via(inst: &Instance) -> Result<Via> {
    let client = Client::new(inst);
    if let Some(pid) = inst.running_agent() {
        // It must answer: acting behind a running agent's back would split
        // what the maps hold from what its store records.
        match client.call(&Request::Ping) {
            Ok(_) => return Ok(Via::Agent(client)),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the agent of this instance (pid {pid}) does not answer"
                )));
            }
        }
    }
    match client.try_call(&Request::Ping) {
        Ok(Some(_)) => Ok(Via::Agent(client)),
        Ok(None) => Ok(Via::Local),
        Err(e) => Err(anyhow::Error::new(e).context("asking the running agent")),
    }
}

/// A request that must succeed; its answer.
pub fn ask(client: &Client, req: &Request) -> Result<Response> {
    match client.call(req).context("asking the running agent")? {
        Response::Error { message } => bail!("the agent refused: {message}"),
        r => Ok(r),
    }
}

/// [`ask`] for a request the agent answers with a JSON value of type `T`.
pub fn ask_json<T: serde::de::DeserializeOwned>(client: &Client, req: &Request) -> Result<T> {
    match ask(client, req)? {
        Response::Json(v) => serde_json::from_value(v).context("the agent's answer"),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// The ban service over this instance's maps and store, for a command run
/// while no agent runs (creating the maps if nothing is pinned yet, so bans
/// can be staged before the first start). Its guard uses the policy the
/// agent last saved (limits, allowlists), or the defaults.
pub fn local_service(inst: &Instance) -> Result<BanService> {
    let store = match Store::open(&inst.state_dir) {
        Ok(s) => s,
        Err(e @ StateError::Locked { .. }) => {
            return Err(anyhow::Error::new(e).context(format!(
                "no agent answers on {}, yet the state store is held",
                inst.socket.display()
            )));
        }
        Err(e) => return Err(e).context("opening the state store"),
    };
    let policy: Policy = store
        .meta(META_POLICY)
        .context("reading the saved policy")?
        .unwrap_or_default();
    let enf = Enforcer::open_or_create(&inst.pin_dir).context("opening the pinned maps")?;
    Ok(BanService::new(
        Some(enf),
        Some(Arc::new(store)),
        Persist::Sync,
        policy,
        Vec::new(),
    ))
}

/// Says so when no interface of the instance has the program attached:
/// the ban is stored, but nothing drops packets yet.
pub fn warn_if_unenforced(inst: &Instance) {
    if !DataPlane::read(&inst.pin_dir).attached() {
        eprintln!(
            "warning: no interface of this instance has the XDP program attached: nothing enforces this ban yet \
             (start `fail2xdp{} run --iface IFACE`)",
            if inst.name == fail2xdp::instance::DEFAULT_NAME {
                String::new()
            } else {
                format!(" --instance {}", inst.name)
            }
        );
    }
}

//! `fail2xdp explain ADDR` and `fail2xdp reload`: ask the running agent over
//! the control socket; explain falls back to the state store and the pinned
//! maps when no agent runs.
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::{
    addr::parse_net,
    cli::{ExplainArgs, Global},
    control::{self, Request, Response},
    enforcer::Enforcer,
    state::{self, Explanation, StateError, Store},
};

pub fn run(g: &Global, a: ExplainArgs) -> anyhow::Result<ExitCode> {
    let target = parse_net(&a.addr)?;
    let req = Request::Explain {
        addr: a.addr.clone(),
    };
    let expl = match control::try_agent(g, &req)? {
        Some(Response::Json(v)) => match serde_json::from_value::<Explanation>(v.clone()) {
            Ok(e) => e,
            // An agent of another version may answer in another shape: show it as is.
            Err(_) => {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
        },
        Some(Response::Ok { message }) => {
            println!("{message}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(Response::Error { message }) => bail!("agent: {message}"),
        None => from_disk(g, &target)?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&expl)?);
    } else {
        print!("{expl}");
    }
    Ok(ExitCode::SUCCESS)
}

/// No agent: read the store directly, and the drop counters from the pinned
/// maps if the data plane is loaded.
fn from_disk(g: &Global, target: &ipnet::IpNet) -> anyhow::Result<Explanation> {
    let db = g.state_dir.join(state::DB_FILE);
    // explain only reads: do not create a store where none exists.
    let mut expl = if db.exists() {
        let store = match Store::open(&g.state_dir) {
            Ok(s) => s,
            Err(e @ StateError::Locked { .. }) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "no agent answers on {}, yet the state store is held",
                    g.socket.display()
                )));
            }
            Err(e) => return Err(e).context("opening the state store"),
        };
        Explanation::from_store(&store, target).context("reading the state store")?
    } else {
        Explanation {
            target: target.trunc(),
            bans: Vec::new(),
            times_banned: 0,
            last_banned: None,
            tracking: Vec::new(),
        }
    };
    kernel_drops(g, &mut expl);
    Ok(expl)
}

fn kernel_drops(g: &Global, expl: &mut Explanation) {
    // Without pinned maps (data plane never started) there are no drops to show.
    match Enforcer::open(&g.pin_dir) {
        Ok(enf) => expl.merge_enforcer(&enf),
        Err(e) => log::debug!("not reading the maps: {e}"),
    }
}

/// The agent's answer to [`Request::Explain`]: the store's records merged with
/// what the maps hold. `enforcer` None = maps not read (dry run).
pub fn answer(store: &Store, enforcer: Option<&Enforcer>, addr: &str) -> Response {
    let target = match parse_net(addr) {
        Ok(t) => t,
        Err(e) => return Response::error(e.to_string()),
    };
    let mut expl = match Explanation::from_store(store, &target) {
        Ok(e) => e,
        Err(e) => return Response::error(e.to_string()),
    };
    if let Some(enf) = enforcer {
        expl.merge_enforcer(enf);
    }
    match serde_json::to_value(&expl) {
        Ok(v) => Response::Json(v),
        Err(e) => Response::error(format!("encoding the explanation: {e}")),
    }
}

pub fn reload(g: &Global) -> anyhow::Result<ExitCode> {
    match control::try_agent(g, &Request::Reload)? {
        None => bail!(
            "no agent is running on {}; nothing to reload",
            g.socket.display()
        ),
        Some(Response::Ok { message }) => println!("{message}"),
        Some(Response::Json(v)) => println!("{}", serde_json::to_string_pretty(&v)?),
        Some(Response::Error { message }) => bail!("reload failed: {message}"),
    }
    Ok(ExitCode::SUCCESS)
}

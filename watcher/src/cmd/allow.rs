//! `fail2xdp allow add|del|list`: the allowlist the guard and the XDP
//! program both honour, changed through the agent when it runs.
use std::process::ExitCode;

use anyhow::{Context, Result};
use fail2xdp::{
    addr::{IpNet, overlaps},
    control::{Request, Response},
    enforcer::{Enforcer, EnforcerError},
    instance::Instance,
};

use super::{Via, ask, local_service, via};

pub enum Allow {
    Add(IpNet),
    Del(IpNet),
    List { json: bool },
}

pub fn allow(inst: &Instance, a: Allow) -> Result<ExitCode> {
    match a {
        Allow::Add(net) => {
            match via(inst)? {
                Via::Agent(c) => {
                    ask(
                        &c,
                        &Request::AllowAdd {
                            target: net.to_string(),
                        },
                    )?;
                }
                Via::Local => local_service(inst)?
                    .allow_add(&net)
                    .with_context(|| format!("allowlisting {net}"))?,
            }
            println!("allowlisted {net}");
            let enf = Enforcer::open(&inst.pin_dir).context("opening the pinned maps")?;
            let covered = enf
                .list()?
                .into_iter()
                .filter(|b| !b.expired && overlaps(&b.net, &net))
                .count();
            if covered > 0 {
                println!(
                    "note: {covered} existing bans overlap {net}; the allowlist wins over them"
                );
            }
        }
        Allow::Del(net) => {
            let had = match via(inst)? {
                Via::Agent(c) => match ask(
                    &c,
                    &Request::AllowDel {
                        target: net.to_string(),
                    },
                )? {
                    Response::Ok { message } => !message.contains("was not"),
                    _ => false,
                },
                Via::Local => {
                    if !inst.pin_dir.exists() {
                        false
                    } else {
                        local_service(inst)?
                            .allow_del(&net)
                            .context("removing it")?
                    }
                }
            };
            if had {
                println!("removed {net} from the allowlist");
            } else {
                println!("{net} was not allowlisted");
                return Ok(ExitCode::from(1));
            }
        }
        Allow::List { json } => {
            let entries = match Enforcer::open(&inst.pin_dir) {
                Ok(enf) => enf.allow_entries()?,
                Err(EnforcerError::NotPinned(_)) => Vec::new(),
                Err(e) => return Err(e).context("opening the pinned maps"),
            };
            if json {
                println!("{}", serde_json::to_string(&entries)?);
            } else {
                for e in entries {
                    println!(
                        "{}{}",
                        e.net,
                        if e.configured { " (configuration)" } else { "" }
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! What fail2ban-client users type: `banned [ADDR]`, `set JAIL banip|unbanip
//! ADDR...`, `get JAIL bantime|findtime|maxretry|ports`, `ping`, `unban
//! --all [--jail J]`, and `config default`. Bans and unbans go through the
//! one ban service like every other (the agent's, or this process's own).
use std::{collections::BTreeMap, process::ExitCode};

use anyhow::{Context, Result, bail};
use fail2xdp::{
    addr::{IpNet, PortSet},
    agent::META_JAIL_RULES,
    ban::{FromJail, JailRules, ManualBan, Origin, UnbanAllReport, UnbanOutcome, describe},
    control::{Request, Response},
    instance::Instance,
    state::printable,
};

use super::{Via, ask, ask_json, local_service, show, via, warn_if_unenforced};

/// A jail setting `get` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Bantime,
    Findtime,
    Maxretry,
    Ports,
}

/// The jails' rules: the running agent's, else those it last saved.
pub fn jail_rules(inst: &Instance) -> Result<Vec<JailRules>> {
    match via(inst)? {
        Via::Agent(client) => ask_json(&client, &Request::JailRules),
        Via::Local => Ok(show::open_store(inst)?
            .and_then(|s| s.meta::<Vec<JailRules>>(META_JAIL_RULES).ok().flatten())
            .unwrap_or_default()),
    }
}

/// The rules of jail `name`, or an error naming the jails there are.
pub fn rules_of(all: &[JailRules], name: &str) -> Result<JailRules> {
    if let Some(r) = all.iter().find(|r| r.name == name) {
        return Ok(r.clone());
    }
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    bail!(
        "no jail named {} (jails: {})",
        name.escape_default(),
        if names.is_empty() {
            "none known: start the agent once with a configuration that has jails".into()
        } else {
            names.join(", ")
        }
    )
}

/// `fail2xdp get JAIL SETTING`: durations in seconds (-1: permanent), as
/// fail2ban-client prints them.
pub fn get(inst: &Instance, jail: &str, what: Setting) -> Result<ExitCode> {
    let r = rules_of(&jail_rules(inst)?, jail)?;
    match what {
        Setting::Bantime => println!(
            "{}",
            r.bantime_secs
                .map_or_else(|| "-1".to_string(), |s| s.to_string())
        ),
        Setting::Findtime => println!("{}", r.findtime_secs),
        Setting::Maxretry => println!("{}", r.maxretry),
        Setting::Ports => println!("{}", r.port_set()),
    }
    Ok(ExitCode::SUCCESS)
}

/// `fail2xdp ping`: is the agent there?
pub fn ping(inst: &Instance) -> Result<ExitCode> {
    match via(inst)? {
        Via::Agent(client) => match ask(&client, &Request::Ping)? {
            Response::Ok { message } => {
                println!("pong: {message}");
                Ok(ExitCode::SUCCESS)
            }
            other => bail!("unexpected answer: {other:?}"),
        },
        Via::Local => {
            println!("no agent is running on {}", inst.socket.display());
            Ok(ExitCode::from(1))
        }
    }
}

/// `fail2xdp banned [ADDR]`: every ban by origin, or the origins whose bans
/// cover ADDR (exit 1 when none does).
pub fn banned(inst: &Instance, target: Option<IpNet>) -> Result<ExitCode> {
    let Some(target) = target else {
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for b in show::bans(inst)?.into_iter().filter(|b| !b.expired) {
            let origins = if b.origins.is_empty() {
                vec![b.origin.clone()]
            } else {
                b.origins.clone()
            };
            for o in origins {
                by.entry(o).or_default().push(show::net_text(&b.net));
            }
        }
        for (o, nets) in &by {
            println!("{}: {}", printable(o), nets.join(" "));
        }
        return Ok(ExitCode::SUCCESS);
    };
    let expl = show::explanation(inst, target)?;
    let mut origins: Vec<(String, IpNet)> = expl
        .bans
        .iter()
        .filter(|b| !b.expired)
        .map(|b| (b.origin.clone(), b.net))
        .collect();
    origins.dedup();
    if origins.is_empty() {
        println!("{} is not banned", show::net_text(&target));
        return Ok(ExitCode::from(1));
    }
    for (o, net) in origins {
        if net == expl.target {
            println!("{}", printable(&o));
        } else {
            println!("{} (ban of {net})", printable(&o));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `fail2xdp set JAIL banip ADDR...`: bans in the jail's name with its
/// bantime (incremented for a repeat offender), ports and reason.
pub fn banip(inst: &Instance, jail: &str, targets: &[IpNet]) -> Result<ExitCode> {
    let origin = Origin::parse(jail)
        .ok()
        .filter(|o| matches!(o, Origin::Jail(_)))
        .with_context(|| format!("{}: not a jail name", jail.escape_default()))?;
    let mut failed = 0;
    let via = via(inst)?;
    // Without an agent, the rules it last saved (the CLI has no other copy).
    let local_rules = match &via {
        Via::Agent(_) => None,
        Via::Local => Some(rules_of(&jail_rules(inst)?, jail)?),
    };
    let local = match &via {
        Via::Agent(_) => None,
        Via::Local => Some(local_service(inst)?),
    };
    for net in targets {
        let mb = ManualBan {
            net: *net,
            length_secs: None,
            ports: Vec::new(),
            origin: origin.clone(),
            reason: None,
            force: false,
            replace: false,
        };
        let take = FromJail {
            length: true,
            ports: true,
        };
        let said = match (&via, &local) {
            (Via::Agent(client), _) => {
                match client.call(&Request::BanFromJail { ban: mb, take })? {
                    Response::Ok { message } => Ok(message),
                    Response::Error { message } => Err(message),
                    other => Err(format!("unexpected answer: {other:?}")),
                }
            }
            (Via::Local, Some(svc)) => {
                let order = mb
                    .order_with(take, local_rules.as_ref())
                    .map_err(anyhow::Error::msg)?;
                let outcome = svc.ban(vec![order]).pop().context("no outcome")?;
                describe(&outcome)
            }
            (Via::Local, None) => unreachable!("a local service exists without an agent"),
        };
        match said {
            Ok(m) => println!("{m} in jail {jail}"),
            Err(m) => {
                eprintln!("{net}: {m}");
                failed += 1;
            }
        }
    }
    if let Some(e) = local.as_ref().and_then(|s| s.health().last_error) {
        bail!(
            "the bans are enforced but the state store failed ({e}): they would not survive a reboot"
        );
    }
    warn_if_unenforced(inst);
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `fail2xdp set JAIL unbanip ADDR...`: the jail's claims go; another
/// origin's claim keeps an address banned (and says so).
pub fn unbanip(inst: &Instance, jail: &str, targets: &[IpNet]) -> Result<ExitCode> {
    let origin = Origin::parse(jail)
        .ok()
        .filter(|o| matches!(o, Origin::Jail(_)))
        .with_context(|| format!("{}: not a jail name", jail.escape_default()))?;
    let via = via(inst)?;
    let local = match &via {
        Via::Agent(_) => None,
        Via::Local => Some(local_service(inst)?),
    };
    let mut code = ExitCode::SUCCESS;
    for net in targets {
        let outcome: UnbanOutcome = match (&via, &local) {
            (Via::Agent(client), _) => ask_json(
                client,
                &Request::UnbanOrigin {
                    target: net.to_string(),
                    origin: origin.clone(),
                },
            )?,
            (Via::Local, Some(svc)) => svc.unban(*net, Some(&origin)).context("unbanning")?,
            (Via::Local, None) => unreachable!("a local service exists without an agent"),
        };
        match outcome {
            UnbanOutcome::Lifted { net, .. } => println!("unbanned {net} from jail {jail}"),
            UnbanOutcome::StillBanned { net, by } => {
                let o: Vec<String> = by.iter().map(ToString::to_string).collect();
                println!(
                    "jail {jail} no longer bans {net}; it stays banned by {}",
                    o.join(", ")
                );
                code = ExitCode::from(1);
            }
            UnbanOutcome::NotBanned { net, .. } => println!("{net} was not banned"),
        }
    }
    Ok(code)
}

/// `fail2xdp unban --all [--jail J]`.
pub fn unban_all(inst: &Instance, origin: Option<Origin>) -> Result<ExitCode> {
    let report: UnbanAllReport = match via(inst)? {
        Via::Agent(client) => ask_json(
            &client,
            &Request::UnbanAll {
                origin: origin.clone(),
            },
        )?,
        Via::Local => {
            if !inst.pin_dir.exists() {
                println!(
                    "nothing is banned (nothing is pinned under {})",
                    inst.pin_dir.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            local_service(inst)?
                .unban_all(origin.as_ref())
                .context("unbanning")?
        }
    };
    let whose = origin.map_or_else(String::new, |o| format!(" of {o}"));
    if report.still_banned > 0 {
        println!(
            "unbanned {} network(s){whose}; {} stay banned by other origins",
            report.lifted, report.still_banned
        );
    } else {
        println!("unbanned {} network(s){whose}", report.lifted);
    }
    Ok(ExitCode::SUCCESS)
}

/// `fail2xdp config default`: the built-in configuration, which documents
/// every key.
pub fn config_default() -> Result<ExitCode> {
    print!("{}", fail2xdp::config::DEFAULT_TOML);
    Ok(ExitCode::SUCCESS)
}

/// What `ban --jail J` takes from the jail when not given: a blocklist
/// import's length (the jail's bantime, no increment: an import is one
/// decision) and ports.
pub fn import_defaults(
    inst: &Instance,
    jail: &str,
    length: Option<Option<u64>>,
    ports: Option<PortSet>,
) -> Result<(Option<u64>, PortSet)> {
    if length.is_some() && ports.is_some() {
        return Ok((length.flatten(), ports.unwrap_or_default()));
    }
    let r = rules_of(&jail_rules(inst)?, jail)?;
    Ok((
        length.unwrap_or(r.bantime_secs),
        ports.unwrap_or_else(|| r.port_set()),
    ))
}

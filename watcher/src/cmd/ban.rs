//! `fail2xdp ban` (an address, or a blocklist with --file) and `unban`:
//! through the running agent, or through a ban service of this process's
//! own when none runs; either way the one ban service decides.
use std::{
    fs::File,
    io::{self, BufReader, Read, Write},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp::{
    addr::{IpNet, PortSet, format_duration},
    ban::{FromJail, ImportReport, ImportSpec, ManualBan, Origin, UnbanOutcome, describe},
    blocklist,
    control::{Request, Response},
    instance::Instance,
};

use super::{Via, ask, ask_json, local_service, via, warn_if_unenforced};

pub enum Target {
    Net(IpNet),
    File(PathBuf),
}

pub struct Ban {
    pub target: Target,
    /// None: permanent.
    pub length: Option<Duration>,
    pub ports: PortSet,
    pub origin: Origin,
    pub reason: Option<String>,
    pub force: bool,
    pub replace: bool,
    /// In a jail's name without --for / --ports: the jail's.
    pub jail_length: bool,
    pub jail_ports: bool,
}

/// Networks per request when a blocklist goes to the agent (an IPv6
/// network is at most ~45 bytes of JSON: a part stays under the agent's
/// request limit).
const PART: usize = 16_384;

pub fn ban(inst: &Instance, b: Ban) -> Result<ExitCode> {
    let code = match &b.target {
        Target::Net(net) => ban_one(inst, &b, *net)?,
        Target::File(path) => ban_file(inst, &b, path)?,
    };
    if code == ExitCode::SUCCESS || matches!(b.target, Target::File(_)) {
        warn_if_unenforced(inst);
    }
    Ok(code)
}

fn ban_one(inst: &Instance, b: &Ban, net: IpNet) -> Result<ExitCode> {
    let mb = ManualBan {
        net,
        length_secs: b.length.map(|d| d.as_secs().max(1)),
        ports: b.ports.0.clone(),
        origin: b.origin.clone(),
        reason: b.reason.clone(),
        force: b.force,
        replace: b.replace,
    };
    let take = FromJail {
        length: b.jail_length,
        ports: b.jail_ports,
    };
    let req = if take.any() {
        Request::BanFromJail {
            ban: mb.clone(),
            take,
        }
    } else {
        Request::Ban(mb.clone())
    };
    match via(inst)? {
        Via::Agent(client) => match ask(&client, &req)? {
            Response::Ok { message } => println!("{message}"),
            other => println!("{other:?}"),
        },
        Via::Local => {
            // The jail's rules as the agent last saved them.
            let rules = match mb.origin.jail() {
                Some(j) if take.any() => Some(super::client::rules_of(
                    &super::client::jail_rules(inst)?,
                    j.as_str(),
                )?),
                _ => None,
            };
            let svc = local_service(inst)?;
            let order = mb
                .order_with(take, rules.as_ref())
                .map_err(anyhow::Error::msg)?;
            let outcome = svc.ban(vec![order]).pop().context("no outcome")?;
            match describe(&outcome) {
                Ok(m) => println!("{m}"),
                Err(m) => bail!("{m}"),
            }
            if let Some(e) = svc.health().last_error {
                eprintln!(
                    "warning: the ban is enforced but not recorded in the state store ({e}); it would not survive a reboot"
                );
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads one address or CIDR a line (`#` comments, blank lines), every bad
/// line named `file:line` on stderr; returns the networks with their lines.
fn read_list(path: &PathBuf) -> Result<(Vec<(IpNet, usize)>, usize)> {
    let name = path.display().to_string();
    let input: Box<dyn Read> = if name == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).with_context(|| format!("opening {name}"))?)
    };
    let stderr = io::stderr();
    let mut err = stderr.lock();
    let list = blocklist::read(BufReader::with_capacity(1 << 20, input), |line, why| {
        writeln!(err, "{name}:{line}: {why}, skipped")
    })
    .with_context(|| format!("reading {name}"))?;
    Ok((list.nets, list.bad))
}

fn ban_file(inst: &Instance, b: &Ban, path: &PathBuf) -> Result<ExitCode> {
    let t0 = Instant::now();
    let name = path.display().to_string();
    let (nets, bad) = read_list(path)?;
    let parsed = t0.elapsed();
    let (length_secs, ports) = match b.origin.jail() {
        Some(j) if b.jail_length || b.jail_ports => super::client::import_defaults(
            inst,
            j.as_str(),
            (!b.jail_length).then(|| b.length.map(|d| d.as_secs().max(1))),
            (!b.jail_ports).then(|| b.ports.clone()),
        )?,
        _ => (b.length.map(|d| d.as_secs().max(1)), b.ports.clone()),
    };
    let spec = ImportSpec {
        // An explicit --jail names the origin; else the file's name does.
        origin: match &b.origin {
            Origin::Manual => Origin::file(path),
            o => o.clone(),
        },
        source: name.clone(),
        length_secs,
        ports: ports.0.clone(),
        reason: b.reason.clone(),
        force: b.force,
    };
    let list: Vec<IpNet> = nets.iter().map(|(n, _)| *n).collect();
    let report: ImportReport = match via(inst)? {
        Via::Agent(client) => {
            let id = match ask(&client, &Request::ImportBegin(spec.clone()))? {
                Response::Json(v) => v.as_u64().context("the agent gave no import id")?,
                other => bail!("unexpected answer: {other:?}"),
            };
            for part in list.chunks(PART) {
                ask(
                    &client,
                    &Request::ImportPart {
                        id,
                        nets: part.iter().map(ToString::to_string).collect(),
                    },
                )?;
            }
            match ask(&client, &Request::ImportCommit { id })? {
                Response::Json(v) => {
                    serde_json::from_value(v).context("the agent's import report")?
                }
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Via::Local => {
            spec.check().map_err(anyhow::Error::msg)?;
            let svc = local_service(inst)?;
            let r = svc.import(&spec, &list).context("importing")?;
            if let Some(e) = svc.health().last_error {
                bail!(
                    "the bans are enforced but the state store failed ({e}): they would not survive a reboot"
                );
            }
            r
        }
    };
    // Refusals by line, as the bad lines were.
    let mut lines: std::collections::HashMap<IpNet, usize> = std::collections::HashMap::new();
    if !report.refused.is_empty() {
        lines = nets.iter().copied().collect();
    }
    for (i, (net, why)) in report.refused.iter().enumerate() {
        if i == 20 {
            eprintln!("... and {} more refused", report.refused.len() - 20);
            break;
        }
        match lines.get(net) {
            Some(l) => eprintln!("{name}:{l}: {why}"),
            None => eprintln!("{name}: {why}"),
        }
    }
    let length = spec.length_secs.map_or_else(
        || "permanently".to_string(),
        |d| format!("for {}", format_duration(Duration::from_secs(d))),
    );
    println!(
        "banned {} of {} entries {length} from {name} as {} ({} refused, {bad} bad lines skipped; {:.2}s: parse {:.2}s, bans {:.2}s)",
        report.banned,
        nets.len(),
        spec.origin,
        report.refused.len(),
        t0.elapsed().as_secs_f64(),
        parsed.as_secs_f64(),
        (t0.elapsed() - parsed).as_secs_f64()
    );
    Ok(if bad > 0 || !report.refused.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn unban(inst: &Instance, net: IpNet) -> Result<ExitCode> {
    let outcome: UnbanOutcome = match via(inst)? {
        Via::Agent(client) => ask_json(
            &client,
            &Request::Unban {
                target: net.to_string(),
            },
        )?,
        Via::Local => {
            if !inst.pin_dir.exists() {
                println!(
                    "{net} was not banned (nothing is pinned under {})",
                    inst.pin_dir.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            local_service(inst)?.unban(net, None).context("unbanning")?
        }
    };
    match outcome {
        UnbanOutcome::Lifted { net, origins } => {
            let o: Vec<String> = origins.iter().map(ToString::to_string).collect();
            if o.is_empty() {
                println!("unbanned {net}");
            } else {
                println!("unbanned {net} (origin {})", o.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        UnbanOutcome::StillBanned { net, by } => {
            let o: Vec<String> = by.iter().map(ToString::to_string).collect();
            println!("{net} stays banned by {}", o.join(", "));
            Ok(ExitCode::from(1))
        }
        UnbanOutcome::NotBanned { net, covered_by } if covered_by.is_empty() => {
            println!("{net} was not banned");
            Ok(ExitCode::SUCCESS)
        }
        UnbanOutcome::NotBanned { net, covered_by } => {
            for (p, origin) in &covered_by {
                eprintln!(
                    "{net} has no ban of its own, but the ban of {p} (origin {}) covers it and still drops it; \
                     `fail2xdp unban {p}` lifts that ban",
                    fail2xdp::state::printable(origin)
                );
            }
            Ok(ExitCode::from(1))
        }
    }
}

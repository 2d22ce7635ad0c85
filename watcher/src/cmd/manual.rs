//! ban, unban, list, status, allow, detach: direct work on the pinned maps,
//! whether or not the agent runs (the maps are shared under an flock).
use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{
    addr::{Guard, IpNet, PortSet, format_duration, parse_ban_length, parse_net},
    cli::*,
    control::{self, ControlError, Request, Response},
    enforcer::{self, BanInfo, BanRequest, Enforcer, EnforcerError},
};

/// Longest line `ban --file` reads; anything longer is not an address.
const MAX_LINE: usize = 512;

pub fn ban(g: &Global, a: BanArgs) -> Result<ExitCode> {
    let ttl = parse_ban_length(&a.duration)?;
    let ports = match &a.ports {
        Some(p) => PortSet::parse(p)?,
        None => PortSet::all(),
    };
    if a.file.is_none() {
        let target = a
            .target
            .clone()
            .context("an address or CIDR to ban (or --file)")?;
        let req = Request::Ban {
            target,
            ttl_secs: ttl.map(|d| d.as_secs().max(1)),
            ports: a.ports.clone(),
            jail: a.jail.clone(),
            reason: a.reason.clone(),
            force: a.force,
        };
        if let Some(code) = via_agent(g, &req)? {
            return Ok(code);
        }
    }
    let mut enf = Enforcer::open_or_create(&g.pin_dir).context("opening the pinned maps")?;
    let guard = enf.guard().context("reading the allowlist")?;
    let make = |net: IpNet| BanRequest {
        net,
        ttl,
        ports: ports.clone(),
        jail: a.jail.clone(),
        mode: Default::default(),
    };
    let length = ttl.map_or_else(
        || "permanently".to_string(),
        |d| format!("for {}", humantime::format_duration(d)),
    );

    if let Some(file) = &a.file {
        return ban_file(
            g,
            &mut enf,
            &guard,
            file,
            a.force,
            a.reason.as_deref(),
            &make,
            &length,
        );
    }
    let target = a
        .target
        .as_deref()
        .context("an address or CIDR to ban (or --file)")?;
    let net = parse_net(target)?;
    guard.check(&net, a.force)?;
    let req = make(net);
    enf.ban(&req).with_context(|| format!("banning {net}"))?;
    persist_manual_ban(g, &req, a.reason.as_deref());
    println!(
        "banned {net} {length} (ports {}, jail {})",
        req.ports, req.jail
    );
    Ok(ExitCode::SUCCESS)
}

/// A running agent owns the state store and its jails' bookkeeping, so a
/// single ban or unban goes through it; `None` when no agent answers on
/// the socket and the CLI writes the maps itself.
fn via_agent(g: &Global, req: &Request) -> Result<Option<ExitCode>> {
    match control::call(&g.socket, req) {
        Ok(Response::Ok { message }) => {
            println!("{message}");
            Ok(Some(ExitCode::SUCCESS))
        }
        Ok(Response::Json(v)) => {
            println!("{v}");
            Ok(Some(ExitCode::SUCCESS))
        }
        Ok(Response::Error { message }) => bail!("the agent refused: {message}"),
        Err(ControlError::NotRunning { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("asking the agent on {}", g.socket.display())),
    }
}

/// Records who banned what and why, so `explain` answers for manual bans and
/// the ban is re-applied after a reboot. The maps are already written, so a
/// store failure is a warning, not a failed ban.
fn persist_manual_ban(g: &Global, req: &BanRequest, reason: Option<&str>) {
    if let Err(e) = crate::state::record_manual(
        &g.state_dir,
        req.net,
        &req.jail,
        reason,
        req.ttl,
        req.ports.0.clone(),
    ) {
        log::warn!("ban is in the maps but not recorded in the state store: {e}");
    }
}

/// Forgets the record of a ban lifted without the agent.
fn forget_manual_ban(g: &Global, net: &IpNet) {
    if let Err(e) = crate::state::remove_manual(&g.state_dir, net) {
        log::warn!("state store: {e}");
    }
}

/// Imports larger than this are enforced but not recorded one by one: a
/// million-line blocklist belongs in the maps, not in a million store records;
/// re-import it after a reboot as with ipset.
const MAX_RECORDED_IMPORT: usize = 100_000;

#[allow(clippy::too_many_arguments)]
fn ban_file(
    g: &Global,
    enf: &mut Enforcer,
    guard: &Guard,
    file: &Path,
    force: bool,
    reason: Option<&str>,
    make: &dyn Fn(IpNet) -> BanRequest,
    length: &str,
) -> Result<ExitCode> {
    let t0 = Instant::now();
    let name = file.display().to_string();
    let input: Box<dyn Read> = if name == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(file).with_context(|| format!("opening {name}"))?)
    };
    let mut r = BufReader::with_capacity(1 << 20, input);
    let mut reqs = Vec::new();
    let (mut bad, mut lineno) = (0usize, 0usize);
    let mut buf = Vec::new();
    let stderr = io::stderr();
    let mut err = stderr.lock();
    loop {
        buf.clear();
        // Bounded read: a line is read up to MAX_LINE bytes, the rest skipped.
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {name}"))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            let mut sink = Vec::new();
            r.read_until(b'\n', &mut sink)
                .with_context(|| format!("reading {name}"))?;
            writeln!(err, "{name}:{lineno}: line too long, skipped")?;
            bad += 1;
            continue;
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            writeln!(err, "{name}:{lineno}: not UTF-8, skipped")?;
            bad += 1;
            continue;
        };
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse_net(line).and_then(|net| guard.check(&net, force).map(|()| net)) {
            Ok(net) => reqs.push(make(net)),
            Err(e) => {
                writeln!(err, "{name}:{lineno}: {e}, skipped")?;
                bad += 1;
            }
        }
    }
    let parsed = t0.elapsed();
    let n = enf.ban_batch(&reqs).context("writing the bans")?.len();
    if reqs.len() <= MAX_RECORDED_IMPORT {
        let recs = reqs
            .iter()
            .map(|r| {
                crate::state::BanRecord::manual(r.net, &r.jail, reason, r.ttl, r.ports.0.clone())
            })
            .collect();
        if let Err(e) = crate::state::record_manual_many(&g.state_dir, recs) {
            log::warn!("bans are in the maps but not recorded in the state store: {e}");
        }
    } else {
        log::warn!(
            "{} entries are more than {MAX_RECORDED_IMPORT}: enforced, but not recorded in the state store (re-import after a reboot)",
            reqs.len()
        );
    }
    println!(
        "banned {n} of {} entries {length} from {name} ({bad} bad lines skipped; {:.2}s: parse {:.2}s, maps {:.2}s)",
        reqs.len(),
        t0.elapsed().as_secs_f64(),
        parsed.as_secs_f64(),
        (t0.elapsed() - parsed).as_secs_f64()
    );
    Ok(if bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn unban(g: &Global, a: UnbanArgs) -> Result<ExitCode> {
    let net = parse_net(&a.target)?;
    if let Some(code) = via_agent(
        g,
        &Request::Unban {
            target: net.to_string(),
        },
    )? {
        return Ok(code);
    }
    let mut enf = match Enforcer::open(&g.pin_dir) {
        Err(EnforcerError::NotPinned(_)) => {
            println!(
                "{net} was not banned (nothing is pinned under {})",
                g.pin_dir.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        r => r.context("opening the pinned maps")?,
    };
    if enf
        .unban(&net)
        .with_context(|| format!("unbanning {net}"))?
    {
        forget_manual_ban(g, &net);
        println!("unbanned {net}");
        Ok(ExitCode::SUCCESS)
    } else {
        // Same answer as the agent gives: the goal state holds.
        println!("{net} was not banned");
        Ok(ExitCode::SUCCESS)
    }
}

/// The maps if pinned, `None` (after saying so) if this instance has none.
fn open_existing(g: &Global, json: bool) -> Result<Option<Enforcer>> {
    match Enforcer::open(&g.pin_dir) {
        Err(EnforcerError::NotPinned(_)) => {
            if !json {
                println!(
                    "nothing is pinned under {} (agent never started here)",
                    g.pin_dir.display()
                );
            }
            Ok(None)
        }
        r => Ok(Some(r.context("opening the pinned maps")?)),
    }
}

fn remaining_text(b: &BanInfo) -> String {
    match b.remaining {
        None => "permanent".into(),
        Some(_) if b.expired => "expired".into(),
        Some(d) => format_duration(d.max(Duration::from_secs(1))),
    }
}

/// Hosts without their /32 or /128, prefixes in CIDR form.
fn net_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn ban_json(b: &BanInfo) -> serde_json::Value {
    let created = jiff::Timestamp::try_from(b.created)
        .map(|t| t.to_string())
        .unwrap_or_default();
    json!({
        "net": b.net.to_string(),
        "jail": b.jail,
        "permanent": b.remaining.is_none(),
        "remaining_secs": b.remaining.map(|d| d.as_secs()),
        "expired": b.expired,
        "created": created,
        "ports": b.ports.0,
        "drops": b.drops,
    })
}

fn print_bans(bans: &[BanInfo]) -> Result<()> {
    let out = io::stdout();
    let mut w = io::BufWriter::new(out.lock());
    writeln!(
        w,
        "{:<43} {:<16} {:>10} {:<24} {:>10}",
        "ADDRESS", "JAIL", "REMAINING", "PORTS", "DROPS"
    )?;
    for b in bans {
        writeln!(
            w,
            "{:<43} {:<16} {:>10} {:<24} {:>10}",
            net_text(&b.net),
            b.jail,
            remaining_text(b),
            b.ports.to_string(),
            b.drops
        )?;
    }
    w.flush()?;
    Ok(())
}

pub fn list(g: &Global, a: ListArgs) -> Result<ExitCode> {
    let bans = match open_existing(g, a.json)? {
        Some(enf) => enf.list().context("listing bans")?,
        None => Vec::new(),
    };
    if a.json {
        println!(
            "{}",
            serde_json::Value::Array(bans.iter().map(ban_json).collect())
        );
    } else {
        print_bans(&bans)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The running agent's own view (jails, sources), when one answers.
fn agent_status(g: &Global, jail: Option<&str>) -> Option<serde_json::Value> {
    let req = Request::Status {
        jail: jail.map(str::to_owned),
    };
    match control::call(&g.socket, &req) {
        Ok(Response::Json(v)) => Some(v),
        Ok(Response::Error { message }) => {
            log::warn!("agent status: {message}");
            None
        }
        _ => None,
    }
}

fn print_agent_status(v: &serde_json::Value) {
    let n = |j: &serde_json::Value, k: &str| j.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    for j in v
        .get("jails")
        .and_then(|x| x.as_array())
        .into_iter()
        .flatten()
    {
        println!(
            "jail {}: lines {}, failures {}, ignored {}, current bans {}, total bans {}, tracked hosts {}, evicted {}, refused {}",
            j.get("name").and_then(|x| x.as_str()).unwrap_or("?"),
            n(j, "lines"),
            n(j, "failures"),
            n(j, "ignored"),
            n(j, "current_bans"),
            n(j, "total_bans"),
            n(j, "tracked_hosts"),
            n(j, "evictions"),
            n(j, "refused"),
        );
    }
    for s in v
        .get("sources")
        .and_then(|x| x.as_array())
        .into_iter()
        .flatten()
    {
        let skipped: u64 = s
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("skipped"))
            .filter_map(|(_, x)| x.as_u64())
            .sum();
        println!(
            "source {}: lines {}, skipped {}, rotations {}, truncations {}",
            s.get("name").and_then(|x| x.as_str()).unwrap_or("?"),
            n(s, "lines"),
            skipped,
            n(s, "rotations"),
            n(s, "truncations"),
        );
    }
}

pub fn status(g: &Global, a: StatusArgs) -> Result<ExitCode> {
    let agent = agent_status(g, a.jail.as_deref());
    if let Some(v) = &agent
        && !a.json
    {
        print_agent_status(v);
    }
    let links = enforcer::links(&g.pin_dir).context("reading the pinned links")?;
    let Some(enf) = open_existing(g, a.json)? else {
        if a.json {
            println!(
                "{}",
                json!({ "pin_dir": g.pin_dir, "pinned": false, "interfaces": [] })
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(jail) = &a.jail {
        let bans: Vec<BanInfo> = enf
            .list()
            .context("listing bans")?
            .into_iter()
            .filter(|b| &b.jail == jail)
            .collect();
        let active = bans.iter().filter(|b| !b.expired).count();
        if a.json {
            println!(
                "{}",
                json!({ "jail": jail, "active_bans": active, "bans": bans.iter().map(ban_json).collect::<Vec<_>>(), "agent": agent })
            );
        } else {
            println!("jail {jail}: {active} active bans");
            print_bans(&bans)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let s = enf.stats().context("reading counters")?;
    let fill = enf.map_fill().context("counting map entries")?;
    if a.json {
        println!(
            "{}",
            json!({
                "pin_dir": g.pin_dir,
                "pinned": true,
                "interfaces": links,
                "counters": enforcer::report::stats_json(&s),
                "maps": fill,
                "agent": agent,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("pin dir: {}", g.pin_dir.display());
    if links.is_empty() {
        println!("interfaces: none attached");
    }
    for l in &links {
        let gone = match l.mode {
            _ if l.ifindex == 0 => " (device gone; link defunct)",
            enforcer::AttachedMode::Unknown => " (in another network namespace)",
            _ => "",
        };
        println!(
            "interface {}: {} mode, prog id {}, link id {}{gone}",
            l.iface, l.mode, l.prog_id, l.link_id
        );
    }
    println!(
        "passed {} pkts / {} bytes; dropped {} pkts / {} bytes",
        s.pass_pkts, s.pass_bytes, s.drop_pkts, s.drop_bytes
    );
    println!(
        "drops: exact v4 {}, exact v6 {}, prefix v4 {}, prefix v6 {}",
        s.drop_exact_v4, s.drop_exact_v6, s.drop_prefix_v4, s.drop_prefix_v6
    );
    println!(
        "passes: allowlisted {}, unparsed {}, expired ban {}, other port {}",
        s.pass_allowlisted, s.pass_unparsed, s.pass_expired, s.pass_other_port
    );
    for f in fill {
        println!(
            "map {:<9} {:>9} / {:<9} ({:.1}%)",
            f.map,
            f.entries,
            f.capacity,
            100.0 * f.entries as f64 / f.capacity.max(1) as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn detach(g: &Global, a: DetachArgs) -> Result<ExitCode> {
    let rep = enforcer::detach_report(&g.pin_dir, &a.ifaces).context("detaching")?;
    for i in &rep.detached {
        println!("detached {i}");
    }
    for i in &rep.not_attached {
        println!("{i}: not attached by this instance");
    }
    if rep.removed_all {
        println!("removed the pinned maps and {}", g.pin_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn allow(g: &Global, a: AllowArgs) -> Result<ExitCode> {
    match a.action {
        AllowAction::Add { target } => {
            let net = parse_net(&target)?;
            let mut enf =
                Enforcer::open_or_create(&g.pin_dir).context("opening the pinned maps")?;
            enf.allow_add(&net)
                .with_context(|| format!("allowlisting {net}"))?;
            let covered = enf
                .list()?
                .into_iter()
                .filter(|b| crate::addr::overlaps(&b.net, &net))
                .count();
            println!("allowlisted {net}");
            if covered > 0 {
                println!(
                    "note: {covered} existing bans overlap {net}; the allowlist wins over them"
                );
            }
        }
        AllowAction::Del { target } => {
            let net = parse_net(&target)?;
            let Some(mut enf) = open_existing(g, false)? else {
                return Ok(ExitCode::from(1));
            };
            if enf
                .allow_del(&net)
                .with_context(|| format!("removing {net}"))?
            {
                println!("removed {net} from the allowlist");
            } else {
                println!("{net} was not allowlisted");
                return Ok(ExitCode::from(1));
            }
        }
        AllowAction::List { json } => {
            let entries = match open_existing(g, json)? {
                Some(enf) => enf.allow_entries()?,
                None => Vec::new(),
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

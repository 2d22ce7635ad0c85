//! `fail2xdp list`, `status` and `explain`: the same typed answers whether
//! the agent gives them or this process reads the maps and the store.
use std::{
    io::{self, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use fail2xdp::{
    addr::{IpNet, format_duration},
    agent::META_JAILS,
    control::{Request, Response},
    enforcer::{self, Enforcer, EnforcerError},
    instance::Instance,
    state::{self, Explanation, StateError, Store, printable},
    status::{ListedBan, Status, listing},
};
use serde_json::Value;

use super::{Via, ask, via};

fn json_answer(r: Response) -> Result<Value> {
    match r {
        Response::Json(v) => Ok(v),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// The store, read-only, if this instance has one (no agent runs).
pub fn open_store(inst: &Instance) -> Result<Option<Store>> {
    // Reading must not create a store where none exists.
    if !inst.state_dir.join(state::DB_FILE).exists() {
        return Ok(None);
    }
    match Store::open(&inst.state_dir) {
        Ok(s) => Ok(Some(s)),
        Err(e @ StateError::Locked { .. }) => Err(anyhow::Error::new(e).context(format!(
            "no agent answers on {}, yet the state store is held",
            inst.socket.display()
        ))),
        Err(e) => Err(e).context("opening the state store"),
    }
}

pub fn bans(inst: &Instance) -> Result<Vec<ListedBan>> {
    match via(inst)? {
        Via::Agent(client) => Ok(serde_json::from_value(json_answer(ask(
            &client,
            &Request::List,
        )?)?)?),
        Via::Local => match Enforcer::open(&inst.pin_dir) {
            Err(EnforcerError::NotPinned(_)) => Ok(Vec::new()),
            r => {
                let enf = r.context("opening the pinned maps")?;
                let store = open_store(inst)?;
                Ok(listing(store.as_ref(), &enf)?)
            }
        },
    }
}

fn remaining_text(b: &ListedBan) -> String {
    match b.remaining_secs {
        None => "permanent".into(),
        Some(_) if b.expired => "expired".into(),
        Some(s) => format_duration(Duration::from_secs(s.max(1))),
    }
}

/// Hosts without their /32 or /128, prefixes in CIDR form.
pub fn net_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn ports_text(p: &[u16]) -> String {
    fail2xdp::addr::PortSet(p.to_vec()).to_string()
}

fn print_bans(bans: &[ListedBan]) -> Result<()> {
    let out = io::stdout();
    let mut w = io::BufWriter::new(out.lock());
    writeln!(
        w,
        "{:<43} {:<24} {:>10} {:<24} {:>10}",
        "ADDRESS", "ORIGIN", "REMAINING", "PORTS", "DROPS"
    )?;
    for b in bans {
        let mut origin = printable(&b.origin).into_owned();
        if b.origins.len() > 1 {
            origin.push_str(&format!(" +{}", b.origins.len() - 1));
        }
        writeln!(
            w,
            "{:<43} {:<24} {:>10} {:<24} {:>10}",
            net_text(&b.net),
            origin,
            remaining_text(b),
            ports_text(&b.ports),
            b.drops
        )?;
    }
    w.flush()?;
    Ok(())
}

pub fn list(inst: &Instance, json: bool) -> Result<ExitCode> {
    let bans = bans(inst)?;
    if json {
        println!("{}", serde_json::to_string(&bans)?);
    } else {
        print_bans(&bans)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(inst: &Instance, jail: Option<&str>, json: bool) -> Result<ExitCode> {
    let st: Status = match via(inst)? {
        Via::Agent(client) => {
            let req = Request::Status {
                jail: jail.map(str::to_owned),
            };
            serde_json::from_value(json_answer(ask(&client, &req)?)?)?
        }
        Via::Local => {
            let st = Status::gather(inst, None);
            if let Some(j) = jail {
                // Without an agent: the jails the agent last ran, or a label in the maps.
                let known: Vec<String> = open_store(inst)?
                    .and_then(|s| s.meta::<Vec<String>>(META_JAILS).ok().flatten())
                    .unwrap_or_default();
                let labelled = bans(inst)?.iter().any(|b| b.jail == j);
                if !known.iter().any(|k| k == j) && !labelled {
                    bail!(
                        "no jail named {} (jails: {})",
                        j.escape_default(),
                        if known.is_empty() {
                            "none known".into()
                        } else {
                            known.join(", ")
                        }
                    );
                }
            }
            st
        }
    };
    if let Some(j) = jail {
        let bans: Vec<ListedBan> = bans(inst)?
            .into_iter()
            .filter(|b| b.jail == j || b.origins.iter().any(|o| o == j))
            .collect();
        let active = bans.iter().filter(|b| !b.expired).count();
        if json {
            println!(
                "{}",
                serde_json::json!({ "jail": j, "active_bans": active, "status": st.jail(j), "bans": bans })
            );
        } else {
            if let Some(js) = st.jail(j) {
                print_jail(js);
            }
            println!("jail {j}: {active} active bans");
            print_bans(&bans)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if json {
        println!("{}", serde_json::to_string(&st)?);
    } else {
        print_status(&st);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_jail(j: &fail2xdp::status::JailStatus) {
    println!(
        "jail {}: lines {}, failures {}, ignored {}, current bans {}, total bans {}, tracked hosts {}, evicted {}, refused {}, stale {}",
        j.name,
        j.lines,
        j.failures,
        j.ignored,
        j.current_bans,
        j.total_bans,
        j.tracked_hosts,
        j.evictions,
        j.refused,
        j.stale
    );
    if j.backtrack_limit_lines > 0 {
        println!(
            "  {} lines hit the backtracking limit (counted as no match)",
            j.backtrack_limit_lines
        );
    }
}

fn print_status(st: &Status) {
    println!(
        "instance {}: protection {}",
        st.instance.name, st.protection.state
    );
    for p in &st.protection.problems {
        println!("  ! {p}");
    }
    println!("pin dir: {}", st.instance.pin_dir.display());
    match &st.agent {
        Some(a) => println!(
            "agent: pid {}, up {}, configuration {}{}",
            a.pid,
            format_duration(Duration::from_secs(a.uptime_secs)),
            a.config,
            if a.dry_run { ", dry run" } else { "" }
        ),
        None => println!("agent: not running"),
    }
    if let Some(a) = &st.agent {
        println!(
            "capabilities: {}",
            if a.capabilities.is_empty() {
                "none".to_string()
            } else {
                a.capabilities.join(",")
            }
        );
        if let Some(g) = &a.readonly_group {
            println!("control socket: read-only for group {g}");
        }
        match &a.connections {
            Some(c) => match &c.problem {
                None => println!(
                    "open connections of banned sources: closed ({} so far)",
                    c.closed
                ),
                Some(why) => println!(
                    "open connections of banned sources: NOT closed: {why} ({} closed before)",
                    c.closed
                ),
            },
            None if !a.dry_run => {
                println!(
                    "open connections of banned sources: left open (close_connections = false)"
                )
            }
            None => {}
        }
    }
    let dp = &st.data_plane;
    if dp.interfaces.is_empty() {
        println!("interfaces: none attached");
    }
    for l in &dp.interfaces {
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
    if let Some(a) = &st.agent {
        for j in &a.jails {
            print_jail(j);
        }
        for s in &a.sources {
            println!(
                "source {}: lines {}, repaired {}, skipped {}, rotations {}, truncations {}",
                s.name,
                s.lines,
                s.replaced_invalid_utf8 + s.replaced_nul,
                s.skipped_too_long + s.skipped_unreadable,
                s.rotations,
                s.truncations
            );
        }
        if let Some(c) = &a.crowdsec {
            print_crowdsec(c);
        }
        let refused: u64 = a.bans.refused.values().sum();
        println!(
            "bans since start: {} made, {} refused, {} stale, {} failed, {} lifted",
            a.bans.banned, refused, a.bans.stale, a.bans.failed, a.bans.unbanned
        );
    }
    if let Some(s) = &dp.counters {
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
    }
    for f in &dp.maps {
        println!(
            "map {:<9} {:>9} / {:<9} ({:.1}%)",
            f.map,
            f.entries,
            f.capacity,
            100.0 * f.entries as f64 / f64::from(f.capacity.max(1))
        );
    }
}

fn print_crowdsec(c: &fail2xdp::status::CrowdSecStatus) {
    if c.pulling {
        println!(
            "crowdsec: {} {}, last sync {}; decisions: {} active, {} applied, {} refused, {} ignored, {} invalid; {} ban(s) lifted",
            c.url,
            if c.connected {
                "connected"
            } else {
                "NOT CONNECTED"
            },
            c.last_sync.as_deref().unwrap_or("never"),
            c.decisions_active,
            c.decisions_applied,
            c.decisions_refused,
            c.decisions_ignored.values().sum::<u64>(),
            c.decisions_invalid,
            c.bans_lifted
        );
        if let Some(e) = &c.last_error {
            println!("crowdsec: last error: {}", printable(e));
        }
    }
    if c.pushing {
        println!(
            "crowdsec: jail bans pushed {}, queued {}, expired unsent {}, dropped {}{}",
            c.pushed,
            c.push_queue,
            c.push_expired,
            c.push_dropped,
            c.push_error
                .as_ref()
                .map(|e| format!("; push failing: {}", printable(e)))
                .unwrap_or_default()
        );
    }
}

pub fn explain(inst: &Instance, target: IpNet, json: bool) -> Result<ExitCode> {
    let expl = explanation(inst, target)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&expl)?);
    } else {
        print!("{expl}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The explanation of `target`, from the agent or from the maps and store.
pub fn explanation(inst: &Instance, target: IpNet) -> Result<Explanation> {
    Ok(match via(inst)? {
        Via::Agent(client) => {
            let req = Request::Explain {
                target: target.to_string(),
            };
            serde_json::from_value(json_answer(ask(&client, &req)?)?)
                .context("the agent's explanation")?
        }
        Via::Local => {
            let store = open_store(inst)?;
            let enf = match Enforcer::open(&inst.pin_dir) {
                Ok(e) => Some(e),
                Err(EnforcerError::NotPinned(_)) => None,
                Err(e) => {
                    log::warn!("not reading the maps: {}", fail2xdp::error_chain(&e));
                    None
                }
            };
            Explanation::gather(store.as_ref(), enf.as_ref(), &target)
                .context("reading the state store")?
        }
    })
}

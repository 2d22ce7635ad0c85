//! `fail2xdp check-config FILE`: loads the file exactly as `run` and `reload`
//! would (filters compiled, sources and ports checked) and reports every
//! problem as file:line:key.
use std::{path::Path, process::ExitCode};

use fail2xdp::{
    config::{self, ConfigError},
    fail2ban::steer,
};

/// `file`: a configuration file, or a fail2ban directory; `fail2ban`: a
/// fail2ban directory given as such; `json`: its jails and warnings as JSON.
pub fn run(file: Option<&Path>, fail2ban: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    if let Some(dir) = fail2ban.or(file.filter(|p| p.is_dir())) {
        return super::check_fail2ban::run(dir, json);
    }
    let file = file.unwrap_or(Path::new(""));
    match config::load(file) {
        Ok(cfg) => {
            println!("{}: OK, {} jail(s)", file.display(), cfg.jails.len());
            if cfg.jails.is_empty() {
                println!(
                    "  no jails: the agent only enforces manual bans, blocklists and CrowdSec decisions"
                );
            }
            for j in &cfg.jails {
                let r = &j.rules;
                println!(
                    "  {}: filters {}; sources {}; maxretry {} within {}; bantime {}{}; ports {}",
                    j.name,
                    j.filters
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(","),
                    j.sources
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                    r.maxretry,
                    humantime::format_duration(r.findtime),
                    r.bantime.map_or_else(
                        || "permanent".to_string(),
                        |d| humantime::format_duration(d).to_string()
                    ),
                    r.increment.map_or_else(String::new, |i| format!(
                        " (x{} per previous ban, up to {})",
                        i.factor,
                        i.max.map_or_else(
                            || "unbounded".to_string(),
                            |m| humantime::format_duration(m).to_string()
                        )
                    )),
                    j.ports,
                );
            }
            if let Some(c) = &cfg.crowdsec {
                println!(
                    "  crowdsec: {}; {}; {}",
                    c.url,
                    if c.pulls() {
                        format!(
                            "pulls decisions every {}",
                            humantime::format_duration(c.poll)
                        )
                    } else {
                        "pulls no decisions (no api_key nor client certificate)".to_string()
                    },
                    match &c.credentials {
                        Some(m) => format!("pushes jail bans as machine {}", m.login),
                        None => "pushes no bans (no credentials_file)".to_string(),
                    }
                );
            }
            // The built-in configuration escalates; a custom one only if it says so.
            let flat: Vec<String> = cfg
                .jails
                .iter()
                .filter(|j| j.rules.increment.is_none() && j.rules.bantime.is_some())
                .map(|j| j.name.to_string())
                .collect();
            if !flat.is_empty() {
                println!(
                    "  note: {} without an increment: a repeat offender is banned for the same bantime every time, never longer. \
                     Add [defaults.increment] (factor, max; see `fail2xdp config default`) to escalate.",
                    if flat.len() == cfg.jails.len() {
                        "no [defaults.increment]: every jail is".to_string()
                    } else {
                        format!("jail(s) {} are", flat.join(", "))
                    }
                );
            }
            // fail2ban filters named in the file: where a client can frame
            // another address (the built-in filters cannot be).
            for j in &cfg.jails {
                for f in &j.filters {
                    for w in steer::filter_warnings(j.name.as_str(), f) {
                        println!("  warning: {w}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ConfigError::Invalid(problems)) => {
            for p in &problems {
                eprintln!("{p}");
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("{}", fail2xdp::error_chain(&e));
            Ok(ExitCode::from(1))
        }
    }
}

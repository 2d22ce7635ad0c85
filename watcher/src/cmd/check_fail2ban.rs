//! `fail2xdp check-config --fail2ban-config DIR`: every jail of a fail2ban
//! configuration with the settings fail2xdp runs it with, and each thing it
//! does differently (or a client could exploit) as file:line.
use std::{path::Path, process::ExitCode};

use serde_json::json;

use fail2xdp::fail2ban::{jails, steer};

pub fn run(dir: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let loaded = match jails::load(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut warnings = loaded.warnings.clone();
    warnings.extend(steer::warnings(&loaded.filters));
    let running: Vec<&str> = loaded
        .config
        .jails
        .iter()
        .map(|j| j.name.as_str())
        .collect();
    if as_json {
        let jails: serde_json::Map<String, serde_json::Value> = loaded
            .reports
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    json!({
                        "enabled": r.enabled,
                        "running": running.contains(&r.name.as_str()),
                        "filter": r.filter,
                        "logpath": r.logpath,
                        "backend": r.backend,
                        "maxretry": r.maxretry,
                        "findtime_s": r.findtime_s,
                        "bantime_s": r.bantime_s.unwrap_or(-1),
                        "ignoreip": r.ignoreip,
                        "ports": r.ports.to_string(),
                        "usedns": r.usedns,
                        "actions": r.actions,
                        "failregex_count": r.failregex.len(),
                        "ignoreregex_count": r.ignoreregex_count,
                        "datepattern": r.datepattern,
                    }),
                )
            })
            .collect();
        let ws: Vec<serde_json::Value> = warnings
            .iter()
            .map(|w| {
                json!({
                    "file": w.origin.as_ref().map(|o| o.file.display().to_string()),
                    "line": w.origin.as_ref().map(|o| o.line),
                    "jail": w.jail,
                    "message": w.message,
                })
            })
            .collect();
        println!("{}", json!({ "jails": jails, "warnings": ws }));
    } else {
        println!(
            "{}: {} jail(s) will run",
            dir.display(),
            loaded.config.jails.len()
        );
        for r in loaded.reports.iter().filter(|r| r.enabled) {
            println!(
                "  {}: filter {} ({} failregex); {} {}; maxretry {} within {} s; bantime {}; ports {}; ignoreip {}{}",
                r.name,
                r.filter,
                r.failregex.len(),
                r.backend,
                r.logpath.join(" "),
                r.maxretry,
                r.findtime_s,
                r.bantime_s
                    .map_or_else(|| "permanent".to_string(), |b| format!("{b} s")),
                r.ports,
                if r.ignoreip.is_empty() {
                    "-".to_string()
                } else {
                    r.ignoreip.join(" ")
                },
                if running.contains(&r.name.as_str()) {
                    ""
                } else {
                    " (SKIPPED)"
                }
            );
        }
        if !warnings.is_empty() {
            println!();
            println!("{} warning(s):", warnings.len());
            for w in &warnings {
                println!("  {w}");
            }
        }
    }
    Ok(if loaded.config.jails.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

//! `fail2xdp import-fail2ban DIR`: the native configuration equivalent to a
//! fail2ban one, as TOML on stdout (fail2ban's filters referenced where
//! they are, so they keep their meaning), for users moving off the INI
//! files. What fail2xdp does differently is listed in comments on top.
use std::{fmt::Write, path::Path, process::ExitCode};

use fail2xdp::{
    config::SourceConf,
    fail2ban::{jails, steer, tags},
};

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match jails::load(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    print!("{}", to_toml(dir, &loaded));
    Ok(ExitCode::SUCCESS)
}

/// TOML a `--config` run loads into the same jails.
pub fn to_toml(dir: &Path, loaded: &jails::Loaded) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# fail2xdp configuration imported from {} by `fail2xdp import-fail2ban`.",
        dir.display()
    );
    let mut warnings = loaded.warnings.clone();
    warnings.extend(steer::warnings(&loaded.filters));
    if !warnings.is_empty() {
        let _ = writeln!(t, "# What fail2xdp does differently from fail2ban here:");
        for w in &warnings {
            let _ = writeln!(t, "#   {}", w.to_string().replace('\n', " "));
        }
    }
    for j in &loaded.config.jails {
        let Some(report) = loaded.reports.iter().find(|r| r.name == j.name.as_str()) else {
            continue;
        };
        let Some((_, file)) = loaded.filters.iter().find(|(n, _)| n == j.name.as_str()) else {
            continue;
        };
        let (_, mut opts) = tags::extract_options(&report.filter).unwrap_or_default();
        opts.push(("usedns".into(), report.usedns.clone()));
        let opts: Vec<String> = opts
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('"', "'")))
            .collect();
        let spec = format!("fail2ban:{}[{}]", file.path.display(), opts.join(", "));
        let _ = writeln!(t);
        let _ = writeln!(t, "[jails.{}]", j.name);
        let _ = writeln!(t, "filter = {}", toml_str(&spec));
        for s in &j.sources {
            match s {
                SourceConf::Files(globs) => {
                    let _ = writeln!(
                        t,
                        "files = [{}]",
                        globs
                            .iter()
                            .map(|g| toml_str(g))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                SourceConf::Journal { matches, .. } => {
                    let _ = writeln!(
                        t,
                        "journal = [{}]",
                        matches
                            .iter()
                            .map(|g| toml_str(g))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
        }
        let r = &j.rules;
        let _ = writeln!(t, "maxretry = {}", r.maxretry);
        let _ = writeln!(t, "findtime = \"{}\"", r.findtime.as_secs());
        match r.bantime {
            Some(b) => {
                let _ = writeln!(t, "bantime = \"{}\"", b.as_secs());
            }
            None => {
                let _ = writeln!(t, "bantime = \"permanent\"");
            }
        }
        if let Some(inc) = r.increment {
            let _ = writeln!(
                t,
                "increment = {{ factor = {:?}, max = {} }}",
                inc.factor,
                toml_str(
                    &inc.max
                        .map_or_else(|| "permanent".to_string(), |m| m.as_secs().to_string())
                )
            );
        }
        let _ = writeln!(t, "ports = {}", toml_str(&j.ports.to_string()));
        let _ = writeln!(t, "ipv4_prefix = {}", r.ipv4_prefix);
        let _ = writeln!(t, "ipv6_prefix = {}", r.ipv6_prefix);
        if !j.allowlist.is_empty() {
            let _ = writeln!(
                t,
                "allowlist = [{}]",
                j.allowlist
                    .iter()
                    .map(|n| toml_str(&n.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    t
}

fn toml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

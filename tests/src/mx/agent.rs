//! fail2xdp beside the lab's Postfix: its built-in jails aimed at the lab's
//! maillog, and what its status says about that log.

use std::path::Path;

use anyhow::{Result, bail};

use crate::Agent;

/// The agent's part of `status --json` (the CLI adds its own around it).
pub(super) fn agent_status(agent: &Agent) -> Result<serde_json::Value> {
    let mut st = agent.status_json()?;
    match st.get_mut("agent") {
        Some(a) if a.is_object() => Ok(a.take()),
        Some(_) => bail!("the agent does not answer: {st}"),
        None => Ok(st),
    }
}

/// The agent's source entry for `path` in its status.
pub(super) fn maillog_source(st: &serde_json::Value, path: &Path) -> serde_json::Value {
    let p = path.display().to_string();
    st["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["source"].as_str().is_some_and(|x| x.ends_with(&p)))
        .cloned()
        .unwrap_or_default()
}

/// fail2xdp's built-in configuration with each jail's sources replaced by
/// the lab's maillog: the same jails, filters and limits, without the
/// host's /var/log.
pub fn builtin_jails_on(maillog: &Path) -> Result<String> {
    let mut out = String::new();
    let mut replaced = 0;
    for line in fail2xdp::config::DEFAULT_TOML.lines() {
        if line.starts_with("files_any = ") || line.starts_with("files = ") {
            out.push_str(&format!("files = [{}]\n", toml_str(maillog)));
            replaced += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if replaced == 0 {
        bail!("the built-in configuration names no log files to replace: has its format changed?");
    }
    Ok(out)
}

/// A path as a TOML basic string.
pub(super) fn toml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

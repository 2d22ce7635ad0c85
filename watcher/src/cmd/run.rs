//! `fail2xdp run`: load the XDP object (reusing pinned maps), attach it to
//! each interface through a pinned link (or swap it into the existing link),
//! then hand over to the agent loop. Stopping leaves the pins, so the data
//! plane keeps enforcing while no agent runs.
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::{
    cli::*,
    enforcer::{Enforcer, XdpMode},
};

pub fn run(g: &Global, a: RunArgs) -> Result<ExitCode> {
    // A bad configuration must change nothing running: load it before the
    // program in a pinned link is replaced; the agent runs this one.
    let cfg =
        crate::config::load_or_builtin(a.config.as_deref()).context("loading the configuration")?;
    // Only maps created now get these sizes; pinned maps keep theirs.
    let mut enf = Enforcer::load(&g.pin_dir, &cfg.capacity).with_context(|| {
        format!(
            "loading the XDP program with maps under {}",
            g.pin_dir.display()
        )
    })?;
    let mode = match a.xdp_mode {
        XdpModeArg::Native => XdpMode::Native,
        XdpModeArg::Generic => XdpMode::Generic,
        XdpModeArg::Auto => XdpMode::Auto,
    };
    for iface in &a.ifaces {
        let at = enf
            .attach(iface, mode)
            .with_context(|| format!("attaching to {iface}"))?;
        eprintln!(
            "{}: {} XDP program (prog id {}, {} mode, link {})",
            at.iface,
            if at.replaced {
                "replaced the"
            } else {
                "attached the"
            },
            at.prog_id,
            at.mode,
            at.link_id
        );
    }
    crate::agent::run(g, &a, cfg, enf)
}

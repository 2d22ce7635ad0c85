//! `fail2xdp detach`: removes the XDP program (and, for the whole
//! instance, every pin). Refused while the agent runs: it would go on
//! logging bans that nothing enforces.
use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp::{
    control::{Client, Request},
    enforcer,
    instance::Instance,
};

pub fn detach(inst: &Instance, ifaces: &[String], stop_agent: bool) -> Result<ExitCode> {
    if let Some(pid) = inst.running_agent() {
        if !stop_agent {
            bail!(
                "the agent of this instance (pid {pid}) is running: detaching would leave it banning with nothing enforcing; \
                 stop it first (systemctl stop fail2xdp, or kill -TERM {pid}), or run `fail2xdp detach --stop-agent`"
            );
        }
        Client::new(inst)
            .call(&Request::Stop)
            .context("asking the agent to stop")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while inst.running_agent().is_some() {
            if Instant::now() > deadline {
                bail!("the agent (pid {pid}) did not stop within 20 s; nothing was detached");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("stopped the agent (pid {pid})");
    }
    let rep = enforcer::detach_report(&inst.pin_dir, ifaces).context("detaching")?;
    for i in &rep.detached {
        println!("detached {i}");
    }
    for i in &rep.not_attached {
        println!("{i}: not attached by this instance");
    }
    if rep.removed_all {
        println!("removed the pinned maps and {}", inst.pin_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

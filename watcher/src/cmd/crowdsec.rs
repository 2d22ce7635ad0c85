//! `fail2xdp crowdsec check`: reads the `[crowdsec]` section as `run`
//! would (keys and files included), then tests the connection and each
//! key against the Local API, changing nothing there.
use std::{path::Path, process::ExitCode};

use anyhow::{Context, Result, bail};
use fail2xdp::config;

pub fn check(config: Option<&Path>, json: bool) -> Result<ExitCode> {
    let cfg = config::load_or_builtin(config).context("loading the configuration")?;
    let Some(cs) = cfg.crowdsec else {
        bail!("{} has no [crowdsec] section", cfg.origin);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let c = rt
        .block_on(fail2xdp::crowdsec::check(&cs))
        .context("setting up the Local API client")?;
    if json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        println!("Local API {}", c.url);
        for (what, r) in [("bouncer", &c.bouncer), ("machine", &c.machine)] {
            match r {
                None => println!("  {what}: not configured"),
                Some(Ok(m)) => println!("  {what}: OK, {m}"),
                Some(Err(e)) => println!("  {what}: FAILED: {e}"),
            }
        }
    }
    Ok(if c.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

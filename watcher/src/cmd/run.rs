//! `fail2xdp run` and `fail2xdp reload`.
use std::process::ExitCode;

use anyhow::{Result, bail};
use fail2xdp::{
    agent,
    control::{Request, Response},
    instance::Instance,
};

use super::{Via, ask, via};

pub fn run(opts: agent::Options) -> Result<ExitCode> {
    agent::run(opts)?;
    Ok(ExitCode::SUCCESS)
}

pub fn reload(inst: &Instance) -> Result<ExitCode> {
    let Via::Agent(client) = via(inst)? else {
        bail!(
            "no agent is running on {}; nothing to reload",
            inst.socket.display()
        );
    };
    match ask(&client, &Request::Reload)? {
        Response::Ok { message } => println!("{message}"),
        other => println!("{other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

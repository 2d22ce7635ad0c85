//! OWNER H6: the agent loop wiring sources -> filters -> jails -> enforcer.
use std::process::ExitCode;

use crate::{cli::{Global, RunArgs}, enforcer::Enforcer};

/// Runs the watcher until SIGTERM/SIGINT; the XDP program is already attached
/// by cmd/run.rs and stays attached (pinned) when this returns.
pub fn run(_g: &Global, _a: &RunArgs, _enforcer: Enforcer) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}

// OWNER: H2 (data plane start), then calls crate::agent::run (H6) (placeholder until implemented)
use std::process::ExitCode;
use crate::cli::*;
pub fn run(_g: &Global, _a: RunArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("not implemented yet") }

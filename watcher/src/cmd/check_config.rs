// OWNER: H6 (placeholder until implemented)
use std::process::ExitCode;
use crate::cli::*;
pub fn run(_g: &Global, _a: CheckConfigArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("not implemented yet") }

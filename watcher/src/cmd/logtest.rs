// OWNER: H4 (placeholder until implemented)
use std::process::ExitCode;
use crate::cli::*;
pub fn run(_g: &Global, _a: TestArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("not implemented yet") }

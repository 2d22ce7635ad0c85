// OWNER: H2 (placeholder until implemented)
use std::process::ExitCode;
use crate::cli::*;
pub fn ban(_g: &Global, _a: BanArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("not implemented yet") }
pub fn unban(_g: &Global, _a: UnbanArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("not implemented yet") }
pub fn list(_g: &Global, _a: ListArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("not implemented yet") }
pub fn status(_g: &Global, _a: StatusArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("not implemented yet") }
pub fn detach(_g: &Global, _a: DetachArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("not implemented yet") }
pub fn allow(_g: &Global, _a: AllowArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("not implemented yet") }

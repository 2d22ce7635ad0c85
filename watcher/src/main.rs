use std::process::ExitCode;

use clap::Parser;

fn main() -> anyhow::Result<ExitCode> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    fail2xdp::cli::Cli::parse().run()
}

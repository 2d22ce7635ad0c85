use std::process::ExitCode;

use clap::Parser;

fn main() -> anyhow::Result<ExitCode> {
    // `fail2xdp list | head` should end quietly, not panic on a closed pipe.
    // SAFETY: called before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    fail2xdp::cli::Cli::parse().run()
}

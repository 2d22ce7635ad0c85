//! The `fail2xdp` binary: the command line (cli.rs) and one file per
//! command family (cmd/); everything else is the library.
mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `fail2xdp list | head` should end quietly, not panic on a closed pipe.
    // SAFETY: called before any thread starts; SIG_DFL is always valid.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = cli::Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        // An ordinary error is one clean message (its causes on one line),
        // never a backtrace, whatever RUST_BACKTRACE says.
        Err(e) => {
            eprintln!("fail2xdp: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    use cli::Command as C;
    let inst = cli.global.instance()?;
    match cli.command {
        C::Run(a) => cmd::run::run(a.options(inst)),
        C::Ban(a) => cmd::ban::ban(&inst, a.options()),
        C::Unban(a) => cmd::ban::unban(&inst, a.target),
        C::List(a) => cmd::show::list(&inst, a.json),
        C::Status(a) => cmd::show::status(&inst, a.jail.as_deref(), a.json),
        C::Explain(a) => cmd::show::explain(&inst, a.addr, a.json),
        C::Reload => cmd::run::reload(&inst),
        C::Allow(a) => cmd::allow::allow(&inst, a.action.options()),
        C::Detach(a) => cmd::detach::detach(&inst, &a.ifaces, a.stop_agent),
        C::CheckConfig(a) => cmd::check_config::run(&a.file),
        C::Test(a) => cmd::logtest::run(a.options()),
    }
}

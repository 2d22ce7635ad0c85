//! The `fail2xdp` binary: the command line (cli.rs) and one file per
//! command family (cmd/); everything else is the library.
mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

/// The signals the agent stops or reloads on.
fn agent_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn mask(how: libc::c_int) {
    let set = agent_signals();
    // SAFETY: a valid set; the old mask is not asked for.
    unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
}

fn main() -> ExitCode {
    // A SIGTERM while the agent starts (loading, attaching) must stop it
    // cleanly once it is up, not kill it half-way: held pending until the
    // agent's handlers are in place (agent::run releases them).
    mask(libc::SIG_BLOCK);
    // `fail2xdp list | head` should end quietly, not panic on a closed pipe.
    // SAFETY: called before any thread starts; SIG_DFL is always valid.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = cli::Cli::parse();
    let debug = cli.global.debug;
    if debug {
        // Errors carry their backtrace with --debug, whatever RUST_BACKTRACE says.
        // SAFETY: no other thread runs yet, so nothing reads the environment meanwhile.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "1") };
    }
    if let Err(e) = fail2xdp::logging::init(&cli.global.log_options()) {
        eprintln!("fail2xdp: {}", fail2xdp::error_chain(&e));
        return ExitCode::from(2);
    }
    if !matches!(cli.command, cli::Command::Run(_)) {
        mask(libc::SIG_UNBLOCK);
    }
    match dispatch(cli) {
        Ok(code) => code,
        // An ordinary error is one clean message (its causes on one line),
        // never a backtrace, whatever RUST_BACKTRACE says; --debug asks for
        // the whole story.
        Err(e) if debug => {
            eprintln!("fail2xdp: {e:?}");
            ExitCode::from(1)
        }
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
        C::Run(a) => cmd::run::run(a.options(inst)?),
        C::Ban(a) => cmd::ban::ban(&inst, a.options()),
        C::Unban(a) => match a.target {
            Some(t) => cmd::ban::unban(&inst, t),
            None => cmd::client::unban_all(&inst, a.jail),
        },
        C::List(a) => cmd::show::list(&inst, a.json),
        C::Status(a) => cmd::show::status(&inst, a.jail.as_deref(), a.json),
        C::Explain(a) => cmd::show::explain(&inst, a.addr, a.json),
        C::Reload => cmd::run::reload(&inst),
        C::Allow(a) => cmd::allow::allow(&inst, a.action.options()),
        C::Detach(a) => cmd::detach::detach(&inst, &a.ifaces, a.stop_agent),
        C::CheckConfig(a) => {
            cmd::check_config::run(a.file.as_deref(), a.fail2ban_config.as_deref(), a.json)
        }
        C::Test(a) => cmd::logtest::run(a.options()),
        C::ImportFail2ban(a) => cmd::import_fail2ban::run(&a.dir),
        C::Crowdsec(a) => match a.action {
            cli::CrowdsecAction::Check { config, json } => {
                cmd::crowdsec::check(config.as_deref(), json)
            }
        },
        C::Banned(a) => cmd::client::banned(&inst, a.target),
        C::Set(a) => match a.action {
            cli::SetAction::Banip => cmd::client::banip(&inst, &a.jail, &a.targets),
            cli::SetAction::Unbanip => cmd::client::unbanip(&inst, &a.jail, &a.targets),
        },
        C::Get(a) => cmd::client::get(&inst, &a.jail, a.setting()),
        C::Ping => cmd::client::ping(&inst),
        C::Top(a) => cmd::top::run(
            &inst,
            cmd::top::TopOptions {
                interval: a.interval,
            },
        ),
        C::Config(a) => match a.action {
            cli::ConfigAction::Default => cmd::client::config_default(),
        },
        C::Completions(a) => cli::completions(a.shell),
        C::Man(a) => cli::man(a.out.as_deref()),
        C::CloserHelper => fail2xdp::closer::helper::main().map(|()| ExitCode::SUCCESS),
        C::InstallSystemd(a) => {
            cmd::install_systemd::run(a.options(&cli.global).map_err(anyhow::Error::msg)?)
        }
    }
}

#[cfg(test)]
mod tests {
    /// The library never sees the command line: only cli.rs, main.rs and
    /// cmd/ may name clap or the binary's modules (it once took
    /// `cli::RunArgs`, and `cli` imported `cmd`, which imported `cli`).
    #[test]
    fn clap_stays_at_the_edge() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src.clone()];
        let mut offenders = Vec::new();
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("src dir").flatten() {
                let p = e.path();
                let rel = p.strip_prefix(&src).expect("inside src").to_path_buf();
                if p.is_dir() {
                    if rel != std::path::Path::new("cmd") {
                        stack.push(p);
                    }
                    continue;
                }
                if rel == std::path::Path::new("cli.rs") || rel == std::path::Path::new("main.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                for needle in ["clap::", "crate::cli", "crate::cmd", "use clap"] {
                    if text.contains(needle) {
                        offenders.push(format!("{}: {needle}", rel.display()));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:?}");
    }
}

//! The command line: raw arguments become validated library types here,
//! once (addresses, ports, durations, origins by clap value parsers), and
//! nowhere else. Nothing in the library sees these types.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use fail2xdp::{
    addr::{IpNet, PortSet, parse_ban_length, parse_net},
    agent,
    ban::Origin,
    enforcer::XdpMode,
    instance::{self, Instance},
    logging, metrics,
};

use crate::cmd;

#[derive(Parser, Debug)]
#[command(
    name = "fail2xdp",
    version,
    about = "Ban abusive mail clients in XDP, from their logs"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Which instance: its name derives its pin dir (/sys/fs/bpf/NAME), state
/// dir (/var/lib/NAME) and control socket (/run/fail2xdp/NAME.sock); each can be
/// given explicitly instead.
#[derive(Args, Debug, Clone)]
pub struct Global {
    #[arg(long, global = true, default_value = instance::DEFAULT_NAME)]
    pub instance: String,
    /// bpffs directory holding the pinned maps and XDP links.
    #[arg(long, global = true)]
    pub pin_dir: Option<PathBuf>,
    /// Directory of the ban state store.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Control socket of the running agent.
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Log lines as human text (coloured on a terminal) or one JSON object a line.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormatArg,
    /// Log level or filter (error, warn, info, debug, trace, or
    /// target=level,...); default: RUST_LOG, else info.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Debug logs, and an error's full trace instead of its one-line message.
    #[arg(long, global = true)]
    pub debug: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Human,
    Json,
}

impl Global {
    pub fn log_options(&self) -> logging::Options {
        logging::Options {
            format: match self.log_format {
                LogFormatArg::Human => logging::Format::Human,
                LogFormatArg::Json => logging::Format::Json,
            },
            level: self.log_level.clone(),
            debug: self.debug,
        }
    }
}

impl Global {
    pub fn instance(&self) -> Result<Instance, instance::InstanceError> {
        Ok(Instance::named(&self.instance)?.with(
            self.pin_dir.clone(),
            self.state_dir.clone(),
            self.socket.clone(),
        ))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach the XDP program and run the log watcher.
    Run(RunArgs),
    /// Ban an address or CIDR (or a list of them with --file).
    Ban(BanArgs),
    /// Remove a ban.
    Unban(UnbanArgs),
    /// List bans with origin, remaining time, ports and drops.
    List(ListArgs),
    /// Protection state, interfaces, counters and map fill (or one jail's status).
    Status(StatusArgs),
    /// Which origin banned an address, when, until when, and the lines that did it.
    Explain(ExplainArgs),
    /// Make the running agent re-read its configuration (same as SIGHUP).
    Reload,
    /// Manage the allowlist: never banned, passed before any ban is looked up.
    Allow(AllowArgs),
    /// Remove the XDP program and every pin of this instance.
    Detach(DetachArgs),
    /// Validate a configuration file; exits non-zero naming file:line:key.
    CheckConfig(CheckConfigArgs),
    /// Run a filter over a log file and report what matched (like fail2ban-regex).
    Test(TestArgs),
    /// Print the native configuration (TOML) equivalent to a fail2ban one.
    ImportFail2ban(ImportFail2banArgs),
    /// CrowdSec's Local API: test the connection and keys.
    Crowdsec(CrowdsecArgs),
    /// Install the hardened systemd unit running `fail2xdp run RUN-ARGS`.
    InstallSystemd(InstallSystemdArgs),
    /// Which origins ban ADDR (or every ban, by origin), like fail2ban-client banned.
    Banned(BannedArgs),
    /// Ban or unban addresses in a jail's name, with its bantime and ports.
    Set(SetArgs),
    /// One setting of a jail: bantime, findtime (seconds; -1 permanent), maxretry, ports.
    Get(GetArgs),
    /// Is the agent running and answering?
    Ping,
    /// Live view: drops and passes per second, the banned sources dropping the most,
    /// bans by origin, failures by jail, map fill.
    Top(TopArgs),
    /// The configuration: `config default` prints the built-in one.
    Config(ConfigArgs),
    /// Shell completions: `fail2xdp completions bash > /etc/bash_completion.d/fail2xdp`.
    Completions(CompletionsArgs),
    /// The man page (roff), for `cargo xtask man`.
    #[command(hide = true)]
    Man(ManArgs),
    /// The agent's connection closer (started by `run`; see closer/).
    #[command(hide = true, name = "closer-helper")]
    CloserHelper,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(long, default_value = "1", value_parser = interval)]
    pub interval: Duration,
}

fn interval(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?}: seconds between 0.1 and 3600")),
    }
}

#[derive(Args, Debug)]
pub struct BannedArgs {
    #[arg(value_parser = net)]
    pub target: Option<IpNet>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SetAction {
    /// Ban in the jail's name (its bantime, increment and ports).
    Banip,
    /// Lift the jail's bans of these addresses.
    Unbanip,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    pub jail: String,
    #[arg(value_enum)]
    pub action: SetAction,
    #[arg(required = true, value_parser = net)]
    pub targets: Vec<IpNet>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SettingArg {
    Bantime,
    Findtime,
    Maxretry,
    Ports,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    pub jail: String,
    #[arg(value_enum)]
    pub setting: SettingArg,
}

impl GetArgs {
    pub fn setting(&self) -> cmd::client::Setting {
        use cmd::client::Setting as S;
        match self.setting {
            SettingArg::Bantime => S::Bantime,
            SettingArg::Findtime => S::Findtime,
            SettingArg::Maxretry => S::Maxretry,
            SettingArg::Ports => S::Ports,
        }
    }
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Print the built-in configuration (every key, documented).
    Default,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write fail2xdp.1 and one page per subcommand here (default: fail2xdp.1 to stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CrowdsecArgs {
    #[command(subcommand)]
    pub action: CrowdsecAction,
}

#[derive(Subcommand, Debug)]
pub enum CrowdsecAction {
    /// Test the connection and the keys of the configuration's [crowdsec] section.
    Check {
        /// Configuration file (TOML) with the [crowdsec] section.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    Native,
    Generic,
    Auto,
}

impl From<XdpModeArg> for XdpMode {
    fn from(m: XdpModeArg) -> Self {
        match m {
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
            XdpModeArg::Auto => XdpMode::Auto,
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Interface to attach to (repeat for several).
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    #[arg(long, value_enum, default_value = "native")]
    pub xdp_mode: XdpModeArg,
    /// Configuration file (TOML); without it the built-in mail jails run.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A fail2ban configuration directory (jail.conf, jail.local, jail.d,
    /// filter.d) to run instead, read as fail2ban reads it.
    #[arg(long, conflicts_with = "config")]
    pub fail2ban_config: Option<PathBuf>,
    /// Read log files from the start instead of the end (where no position was saved).
    #[arg(long)]
    pub replay: bool,
    /// Start at the end of the log files, not where the last run stopped reading.
    #[arg(long, conflicts_with = "replay")]
    pub from_end: bool,
    /// Decide bans but write nothing to the maps.
    #[arg(long)]
    pub dry_run: bool,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (e.g. 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Allow --metrics on an address other hosts can reach.
    #[arg(long, requires = "metrics")]
    pub metrics_public: bool,
}

impl RunArgs {
    pub fn options(self, instance: Instance) -> Result<agent::Options, metrics::MetricsError> {
        let metrics = self
            .metrics
            .map(|a| metrics::Endpoint::new(a, self.metrics_public))
            .transpose()?;
        Ok(agent::Options {
            instance,
            ifaces: self.ifaces,
            xdp_mode: self.xdp_mode.into(),
            // A fail2ban directory is loaded (and reloaded) through the same
            // path as a configuration file: `config::load` reads a directory
            // as fail2ban's.
            config: self.fail2ban_config.or(self.config),
            replay: self.replay,
            from_end: self.from_end,
            dry_run: self.dry_run,
            metrics,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        })
    }
}

fn net(s: &str) -> Result<IpNet, String> {
    parse_net(s).map_err(|e| e.to_string())
}

/// A ban length: `None` is permanent.
#[derive(Debug, Clone, Copy)]
pub struct Length(pub Option<Duration>);

/// "10m", "12h", "1w", seconds, or "permanent".
fn length(s: &str) -> Result<Length, String> {
    parse_ban_length(s).map(Length).map_err(|e| e.to_string())
}

fn ports(s: &str) -> Result<PortSet, String> {
    PortSet::parse(s).map_err(|e| e.to_string())
}

/// `manual`, or a jail's name (a ban made in that jail's name).
fn origin(s: &str) -> Result<Origin, String> {
    match Origin::parse(s).map_err(|e| e.to_string())? {
        o @ (Origin::Manual | Origin::Jail(_)) => Ok(o),
        _ => Err(format!(
            "`{}`: --jail takes `manual` or a jail name",
            s.escape_default()
        )),
    }
}

#[derive(Args, Debug)]
pub struct BanArgs {
    /// Address or CIDR to ban.
    #[arg(required_unless_present = "file", conflicts_with = "file", value_parser = net)]
    pub target: Option<IpNet>,
    /// Read one address or CIDR a line ("-" for stdin); '#' starts a comment.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Ban length: 10m, 12h, 1w, seconds, ... or "permanent" (default; with
    /// --jail, the jail's bantime, longer for a repeat offender).
    #[arg(long = "for", value_parser = length)]
    pub duration: Option<Length>,
    /// Destination ports (numbers or names: smtp, submission, imaps, ...);
    /// default all (with --jail, the jail's).
    #[arg(long, value_parser = ports)]
    pub ports: Option<PortSet>,
    /// Ban in the name of this jail (default: a manual ban).
    #[arg(long, default_value = "manual", value_parser = origin)]
    pub jail: Origin,
    #[arg(long)]
    pub reason: Option<String>,
    /// Allow prefixes broader than the configured limit.
    #[arg(long)]
    pub force: bool,
    /// Replace a ban in force (to shorten it) instead of keeping the longer.
    #[arg(long)]
    pub replace: bool,
}

impl BanArgs {
    pub fn options(self) -> cmd::ban::Ban {
        let jail = matches!(self.jail, Origin::Jail(_));
        cmd::ban::Ban {
            target: match (self.target, self.file) {
                (Some(n), _) => cmd::ban::Target::Net(n),
                (None, Some(f)) => cmd::ban::Target::File(f),
                // clap requires one of them.
                (None, None) => cmd::ban::Target::File(PathBuf::from("-")),
            },
            length: self.duration.and_then(|l| l.0),
            jail_length: jail && self.duration.is_none(),
            jail_ports: jail && self.ports.is_none(),
            ports: self.ports.unwrap_or_else(PortSet::all),
            origin: self.jail,
            reason: self.reason,
            force: self.force,
            replace: self.replace,
        }
    }
}

#[derive(Args, Debug)]
pub struct UnbanArgs {
    #[arg(required_unless_present = "all", conflicts_with = "all", value_parser = net)]
    pub target: Option<IpNet>,
    /// Every ban (with --jail: every ban of that jail, or `manual`).
    #[arg(long)]
    pub all: bool,
    #[arg(long, requires = "all", value_parser = origin)]
    pub jail: Option<Origin>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// One jail's counts and bans instead of the whole agent.
    pub jail: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[arg(value_parser = net)]
    pub addr: IpNet,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AllowArgs {
    #[command(subcommand)]
    pub action: AllowAction,
}

#[derive(Subcommand, Debug)]
pub enum AllowAction {
    /// Add an address or CIDR to the allowlist.
    Add {
        #[arg(value_parser = net)]
        target: IpNet,
    },
    /// Remove an address or CIDR from the allowlist.
    Del {
        #[arg(value_parser = net)]
        target: IpNet,
    },
    /// Show the allowlist.
    List {
        #[arg(long)]
        json: bool,
    },
}

impl AllowAction {
    pub fn options(self) -> cmd::allow::Allow {
        match self {
            AllowAction::Add { target } => cmd::allow::Allow::Add(target),
            AllowAction::Del { target } => cmd::allow::Allow::Del(target),
            AllowAction::List { json } => cmd::allow::Allow::List { json },
        }
    }
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    /// Only this interface (default: every attached interface and all pins).
    #[arg(long = "iface")]
    pub ifaces: Vec<String>,
    /// Stop the running agent of this instance first.
    #[arg(long)]
    pub stop_agent: bool,
}

#[derive(Args, Debug)]
pub struct CheckConfigArgs {
    #[arg(required_unless_present = "fail2ban_config")]
    pub file: Option<PathBuf>,
    /// Check a fail2ban configuration directory: every enabled jail with its
    /// effective settings, and what fail2xdp does differently.
    #[arg(long, conflicts_with = "file")]
    pub fail2ban_config: Option<PathBuf>,
    /// With --fail2ban-config: the jails and warnings as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ImportFail2banArgs {
    /// fail2ban's configuration directory (e.g. /etc/fail2ban).
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct InstallSystemdArgs {
    /// Where the unit runs fail2xdp from (this binary is copied there).
    #[arg(long, default_value = "/usr/local/bin/fail2xdp")]
    pub bin: PathBuf,
    /// Where the unit goes.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// Print the unit instead of installing it.
    #[arg(long)]
    pub print: bool,
    /// `fail2xdp run`'s arguments for the unit (e.g. --iface eth0 --config /etc/fail2xdp.toml).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "RUN-ARGS"
    )]
    pub run_args: Vec<String>,
}

impl InstallSystemdArgs {
    /// Checked as `run` checks them, with the paths the unit needs absolute.
    pub fn options(self, global: &Global) -> Result<cmd::install_systemd::Install, String> {
        let run = Cli::try_parse_from(
            ["fail2xdp", "run"]
                .into_iter()
                .map(String::from)
                .chain(self.run_args.iter().cloned()),
        )
        .map_err(|e| format!("the run arguments: {e}"))?;
        let Command::Run(r) = run.command else {
            return Err("the run arguments are not `run`'s".into());
        };
        for p in [&r.config, &r.fail2ban_config].into_iter().flatten() {
            if !p.is_absolute() {
                return Err(format!(
                    "{}: the unit runs in /, give an absolute path",
                    p.display()
                ));
            }
        }
        Ok(cmd::install_systemd::Install {
            instance: global.instance().map_err(|e| e.to_string())?,
            explicit_paths: global.pin_dir.is_some()
                || global.state_dir.is_some()
                || global.socket.is_some(),
            run_args: self.run_args,
            bin: self.bin,
            unit_dir: self.unit_dir,
            print: self.print,
        })
    }
}

#[derive(Args, Debug)]
pub struct TestArgs {
    pub logfile: PathBuf,
    /// A failregex in fail2ban's syntax in place of a filter, or a fail2ban
    /// filter (`postfix[mode=aggressive]`, a path), as fail2ban-regex takes them.
    #[arg(conflicts_with_all = ["filter", "fail2ban_filter"])]
    pub regex: Option<String>,
    /// Built-in filter name, or a filter file.
    #[arg(long, required_unless_present_any = ["regex", "fail2ban_filter"])]
    pub filter: Option<String>,
    /// A fail2ban filter file (filter.d/NAME.conf), read as fail2ban reads it.
    #[arg(long, conflicts_with = "filter")]
    pub fail2ban_filter: Option<PathBuf>,
    /// A fail2ban filter option, as in `NAME[KEY=VALUE]` (repeatable).
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// fail2ban filters: the first failregex that matches decides, as in
    /// fail2ban's server (default: every failregex is tried, as fail2ban-regex does).
    #[arg(long)]
    pub first_match: bool,
    #[arg(long)]
    pub json: bool,
    /// Print every matched line.
    #[arg(short, long)]
    pub verbose: bool,
    /// Reference time for timestamps without a year (RFC 3339, e.g.
    /// 2005-08-14T10:00:00Z); default: the current time.
    #[arg(long, value_parser = rfc3339)]
    pub now: Option<jiff::Timestamp>,
}

fn rfc3339(s: &str) -> Result<jiff::Timestamp, String> {
    s.parse()
        .map_err(|_| format!("{s:?}: expected RFC 3339, e.g. 2005-08-14T10:00:00Z"))
}

impl TestArgs {
    pub fn options(self) -> cmd::logtest::TestOptions {
        cmd::logtest::TestOptions {
            logfile: self.logfile,
            regex: self.regex,
            filter: self.filter,
            fail2ban_filter: self.fail2ban_filter,
            options: self.options,
            first_match: self.first_match,
            json: self.json,
            verbose: self.verbose,
            now: self.now,
        }
    }
}

/// `fail2xdp completions SHELL`: the completion script, from this definition.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<std::process::ExitCode> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "fail2xdp", &mut std::io::stdout());
    Ok(std::process::ExitCode::SUCCESS)
}

/// The man pages, from this definition: fail2xdp.1 (to stdout), or with
/// `out` fail2xdp.1 and fail2xdp-COMMAND.1 for each visible command.
pub fn man(out: Option<&std::path::Path>) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context;
    use clap::CommandFactory;
    let cmd = Cli::command();
    let Some(dir) = out else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(std::process::ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, c: clap::Command| -> anyhow::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("fail2xdp-{}", sub.get_name());
        let bin = format!("fail2xdp {}", sub.get_name());
        write(&name, sub.clone().display_name(name.clone()).bin_name(bin))?;
    }
    write("fail2xdp", cmd)?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fail2xdp").chain(args.iter().copied()))
    }

    #[test]
    fn arguments_are_validated_at_the_edge() {
        let c = parse(&["ban", "192.0.2.7", "--for", "10m", "--ports", "smtp"]).unwrap();
        let Command::Ban(b) = c.command else { panic!() };
        let b = b.options();
        assert_eq!(b.length, Some(Duration::from_secs(600)));

        assert_eq!(b.ports.0, vec![25]);
        assert!(!b.jail_length && !b.jail_ports);
        // In a jail's name, what is not given is the jail's.
        let c = parse(&["ban", "192.0.2.7", "--jail", "sasl", "--ports", "smtp"]).unwrap();
        let Command::Ban(b) = c.command else { panic!() };
        let b = b.options();
        assert!(b.jail_length && !b.jail_ports);
        let c = parse(&["ban", "192.0.2.7"]).unwrap();
        let Command::Ban(b) = c.command else { panic!() };
        let b = b.options();
        assert_eq!(
            (b.length, b.jail_length),
            (None, false),
            "manual: permanent"
        );
        // It panicked the agent once ("overflow when adding duration to instant").
        assert!(parse(&["ban", "192.0.2.7", "--for", "18446744073709551615"]).is_err());
        for bad in ["", "a b", "x\ny", "\u{1b}[31m", &"j".repeat(33), "file:x"] {
            assert!(
                parse(&["ban", "192.0.2.7", "--jail", bad]).is_err(),
                "--jail {bad:?}"
            );
        }
        assert!(parse(&["ban", "192.0.2.7", "--jail", "postfix-sasl"]).is_ok());
        assert!(parse(&["ban", "not-an-address"]).is_err());
        assert!(
            parse(&["--instance", "../x", "list"])
                .unwrap()
                .global
                .instance()
                .is_err()
        );
        let g = parse(&["--instance", "mx2", "--socket", "/tmp/s", "list"])
            .unwrap()
            .global;
        let i = g.instance().unwrap();
        assert_eq!(i.pin_dir, std::path::Path::new("/sys/fs/bpf/mx2"));
        assert_eq!(i.socket, std::path::Path::new("/tmp/s"));
    }
}

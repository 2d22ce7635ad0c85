//! Command line: raw arguments become validated options here, once.
use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};

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

/// Where one instance keeps its pins, state and control socket. Tests run
/// several independent instances by giving each its own set.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// bpffs directory holding the pinned maps and XDP links.
    #[arg(long, global = true, default_value = fail2xdp_common::PIN_DIR_DEFAULT)]
    pub pin_dir: PathBuf,
    /// Directory of the ban state store.
    #[arg(long, global = true, default_value = "/var/lib/fail2xdp")]
    pub state_dir: PathBuf,
    /// Control socket of the running agent.
    #[arg(long, global = true, default_value = "/run/fail2xdp.sock")]
    pub socket: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach the XDP program and run the log watcher.
    Run(RunArgs),
    /// Ban an address or CIDR (or a list of them with --file).
    Ban(BanArgs),
    /// Remove a ban.
    Unban(UnbanArgs),
    /// List bans with jail, remaining time, ports and drops.
    List(ListArgs),
    /// Interfaces, mode, counters and map fill (or one jail's status).
    Status(StatusArgs),
    /// Which jail banned an address, when, until when, and the lines that did it.
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
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    Native,
    Generic,
    Auto,
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
    /// Read log files from the start instead of the end.
    #[arg(long)]
    pub replay: bool,
    /// Decide bans but write nothing to the maps.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct BanArgs {
    /// Address or CIDR to ban.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub target: Option<String>,
    /// Read one address or CIDR a line ("-" for stdin); '#' starts a comment.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Ban length: 10m, 12h, 1w, ... or "permanent".
    #[arg(long = "for", default_value = "permanent")]
    pub duration: String,
    /// Destination ports (numbers or names: smtp, submission, imaps, ...); default all.
    #[arg(long)]
    pub ports: Option<String>,
    #[arg(long, default_value = "manual")]
    pub jail: String,
    #[arg(long)]
    pub reason: Option<String>,
    /// Allow loopback-free but broad prefixes beyond the configured limit.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct UnbanArgs {
    pub target: String,
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
    pub addr: String,
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
    Add { target: String },
    /// Remove an address or CIDR from the allowlist.
    Del { target: String },
    /// Show the allowlist.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    /// Only this interface (default: every attached interface and all pins).
    #[arg(long = "iface")]
    pub ifaces: Vec<String>,
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
    #[arg(long)]
    pub now: Option<String>,
}

impl Cli {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let g = &self.global;
        match self.command {
            Command::Run(a) => cmd::run::run(g, a),
            Command::Ban(a) => cmd::manual::ban(g, a),
            Command::Unban(a) => cmd::manual::unban(g, a),
            Command::List(a) => cmd::manual::list(g, a),
            Command::Status(a) => cmd::manual::status(g, a),
            Command::Explain(a) => cmd::explain::run(g, a),
            Command::Reload => cmd::explain::reload(g),
            Command::Allow(a) => cmd::manual::allow(g, a),
            Command::Detach(a) => cmd::manual::detach(g, a),
            Command::CheckConfig(a) => cmd::check_config::run(g, a),
            Command::Test(a) => cmd::logtest::run(g, a),
            Command::ImportFail2ban(a) => cmd::import_fail2ban::run(a),
        }
    }
}

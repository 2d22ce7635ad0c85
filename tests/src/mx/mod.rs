//! The mx lab: a real mail server under attack. Debian's Postfix (smtpd on
//! 25, submission on 587) authenticating through Dovecot and delivering to
//! an mbox, in an `mx` namespace; attackers and a client in their own
//! namespaces, routed to it through a hub (see [`MxNet`]); and a protecting
//! daemon beside Postfix on the same log file: the fail2xdp agent (XDP on
//! mx's veth) or, in the benchmark, fail2ban with nftables.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use fail2xdp_tests::mx::MxLab;
//! let mut lab = MxLab::start()?;           // panics if not root
//! lab.start_agent("")?;                    // the built-in jails, on the lab's maillog
//! lab.submit("before-the-attack")?;        // the client's message, in the mailbox
//! # Ok(()) }
//! ```
//!
//! Everything is stopped and removed on Drop, panics included: the agent,
//! fail2ban, Postfix, Dovecot, then the namespaces and the lab directory.
//! A lab killed before its Drop ran is cleaned up by the next one.

mod agent;
pub mod conns;
mod daemon;
mod dovecot;
pub mod fail2ban;
pub mod logs;
mod net;
mod postfix;
pub mod smtp;
mod stale;

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

pub use agent::builtin_jails_on;
pub use daemon::run_bounded;
pub use dovecot::Dovecot;
pub use fail2ban::Fail2ban;
pub use net::{MxNet, join, spawn_in};
pub use postfix::{DOMAIN, Postfix};

use crate::{Agent, AgentOptions};
use agent::{agent_status, maillog_source, toml_str};
use daemon::user_ids;

/// The lab's one mailbox user and the password its client knows.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct-horse-battery";
/// What the attackers try instead.
pub const WRONG_PASSWORD: &str = "123456";

static LABS: AtomicU32 = AtomicU32::new(0);

/// Fields drop in declaration order: protection first, the mail server
/// next, the namespaces and the directory last.
#[derive(Debug)]
pub struct MxLab {
    agent: Option<Agent>,
    /// Maillog lines that were there when the agent started (it skips them).
    agent_skipped: u64,
    fail2ban: Option<Fail2ban>,
    postfix: Postfix,
    dovecot: Dovecot,
    pub net: MxNet,
    dir: tempfile::TempDir,
}

impl MxLab {
    /// Checks privileges and tools (panicking with what is missing), builds
    /// the namespaces and starts Dovecot and Postfix.
    pub fn start() -> Result<Self> {
        crate::require_privileges();
        require_tools();
        stale::clean_stale_labs_once();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{pid}-{n}-", stale::DIR_PREFIX))
            .tempdir_in(stale::lab_parent())
            .context("creating the lab directory")?;
        // Postfix's and Dovecot's unprivileged processes walk into it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let net = MxNet::new()?;
        // Letters and digits only: fail2ban's postfix filter reads the
        // syslog name as `postfix(-\w+)?`.
        let id = format!("lab{pid}x{n}");
        let mut postfix = Postfix::prepare(&net.mx, dir.path(), &id, &[USER])?;
        let dovecot = Dovecot::start(
            &net.mx,
            dir.path(),
            &postfix.sasl_socket(),
            &[(USER, PASSWORD)],
        )?;
        postfix.start(&net.mx)?;
        Ok(Self {
            agent: None,
            agent_skipped: 0,
            fail2ban: None,
            postfix,
            dovecot,
            net,
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Postfix's `maillog_file`.
    pub fn maillog(&self) -> PathBuf {
        self.postfix.maillog()
    }

    pub fn postfix(&self) -> &Postfix {
        &self.postfix
    }

    pub fn dovecot(&self) -> &Dovecot {
        &self.dovecot
    }

    pub fn dovecot_pid(&self) -> Option<u32> {
        self.dovecot.pid()
    }

    /// Starts the agent on mx's veth (native XDP) with fail2xdp's built-in
    /// jails reading the lab's maillog, plus the jails in `extra` (TOML with
    /// `{maillog}` standing for the log's path).
    pub fn start_agent(&mut self, extra: &str) -> Result<&Agent> {
        self.start_agent_with(extra, &[])
    }

    /// [`Self::start_agent`] with further `run` arguments (`--dry-run`).
    pub fn start_agent_with(&mut self, extra: &str, args: &[&str]) -> Result<&Agent> {
        if self.agent.is_some() {
            bail!("the agent already runs");
        }
        let maillog = self.maillog();
        let config = builtin_jails_on(&maillog)? + &extra.replace("{maillog}", &toml_str(&maillog));
        let path = self.dir().join("fail2xdp.toml");
        fs::write(&path, config).context("writing the agent's config")?;
        let opts = AgentOptions {
            config: Some(path),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            ..AgentOptions::default()
        };
        // Postfix's own start (master, postlogd, the services it spawns)
        // can still be logging on a loaded machine: counts are taken once
        // its log has been quiet for a while.
        let before = quiet_lines(&maillog, Duration::from_secs(1), Duration::from_secs(20));
        let agent = Agent::start_with_on(&self.net.mx, &self.net.mx_if, opts)?;
        let agent = self.agent.insert(agent);
        // The agent reads from the end of the file it found at start: its
        // line counts leave out what was there. The lab is idle meanwhile.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The control socket comes up shortly after the attach.
            let st = agent_status(agent);
            if let Ok(st) = &st
                && maillog_source(st, &maillog)["files_opened"].as_u64() >= Some(1)
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent did not open {} within 30 s: {st:?}",
                    maillog.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let lines = logs::lines(&maillog);
        let after = lines.len();
        if after != before {
            bail!(
                "Postfix logged {} lines while the agent started: its counts would be off:\n{}",
                after.saturating_sub(before),
                lines[before.min(after)..].join("\n")
            );
        }
        self.agent_skipped = after as u64;
        Ok(self.agent())
    }

    /// The running agent's part of `status --json`.
    pub fn agent_status(&self) -> Result<serde_json::Value> {
        agent_status(self.agent())
    }

    /// Waits until every jail has been offered every line of the maillog as
    /// it is now.
    pub fn wait_agent_caught_up(&self, timeout: Duration) -> Result<()> {
        let total = logs::lines(&self.maillog()).len() as u64;
        let want = total.saturating_sub(self.agent_skipped);
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.agent_status()?;
            let behind: Vec<String> = st["jails"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|j| j["lines"].as_u64().unwrap_or(0) < want)
                .map(|j| format!("{} {}", j["name"], j["lines"]))
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "jails {} of the {want} maillog lines written since the agent started, after {timeout:?}: {st}",
                    behind.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running agent.
    ///
    /// # Panics
    /// If [`MxLab::start_agent`] was not called: a test bug.
    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("start_agent first")
    }

    /// Stops the agent (Drop does it too); its pins go with it.
    pub fn stop_agent(&mut self) {
        self.agent = None;
    }

    /// Starts fail2ban-server in mx with Debian's postfix jail (mode=auth)
    /// and the nftables action on the lab's maillog.
    pub fn start_fail2ban(&mut self) -> Result<&Fail2ban> {
        if self.fail2ban.is_some() {
            bail!("fail2ban already runs");
        }
        let f = Fail2ban::start(&self.net.mx, self.dir(), &self.maillog())?;
        Ok(self.fail2ban.insert(f))
    }

    pub fn fail2ban(&self) -> Option<&Fail2ban> {
        self.fail2ban.as_ref()
    }

    /// Fails if Postfix's master exited.
    pub fn check_postfix(&mut self) -> Result<()> {
        self.postfix.check_running()
    }

    /// Adds a source address to the attackers' namespace.
    pub fn add_attacker(&self, addr: IpAddr) -> Result<()> {
        self.net.add_attacker(addr)
    }

    /// Runs `f` on a thread in the attackers' namespace.
    pub fn attacker_thread<T, F>(&self, name: &str, f: F) -> Result<JoinHandle<Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        spawn_in(&self.net.attackers, name, f)
    }

    /// Runs `f` on a thread in the client's namespace.
    pub fn client_thread<T, F>(&self, name: &str, f: F) -> Result<JoinHandle<Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        spawn_in(&self.net.client, name, f)
    }

    /// swaks in the attackers' namespace, from `src` to mx's `port`, killed
    /// if it runs longer than `limit`; `args` are swaks options after those.
    pub fn swaks(&self, src: IpAddr, port: u16, args: &[&str], limit: Duration) -> Result<Output> {
        run_bounded(self.swaks_command(src, port, args)?, limit)
            .context("swaks (is swaks installed? cargo xtask prereqs)")
    }

    /// [`MxLab::swaks`] left running, its output discarded: for a session a
    /// ban cuts short (the caller kills it).
    pub fn swaks_child(&self, src: IpAddr, port: u16, args: &[&str]) -> Result<Child> {
        self.swaks_command(src, port, args)?
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting swaks (is swaks installed? cargo xtask prereqs)")
    }

    fn swaks_command(&self, src: IpAddr, port: u16, args: &[&str]) -> Result<Command> {
        let server = MxNet::mx_addr(src);
        let mut cmd = self.net.attackers.command("swaks")?;
        cmd.args(["--server", &server.to_string(), "--port", &port.to_string()])
            .args(["--local-interface", &src.to_string()])
            .args(["--helo", "attacker.example", "--timeout", "20"])
            .args(args);
        Ok(cmd)
    }

    /// The client's path: submission (587) with the right password, a
    /// message to [`USER`] with `subject`, then QUIT; waits until the
    /// message is in the mailbox. Returns how long that took.
    pub fn submit(&self, subject: &str) -> Result<Duration> {
        let t0 = Instant::now();
        let s = subject.to_string();
        join(self.client_thread("client", move || send_as_client(&s))?)?;
        self.wait_delivered(subject, Duration::from_secs(30))?;
        Ok(t0.elapsed())
    }

    /// The mbox of [`USER`].
    pub fn mailbox(&self) -> PathBuf {
        self.postfix.mailbox(USER)
    }

    /// Is a message with this Subject in the mailbox?
    pub fn delivered(&self, subject: &str) -> bool {
        let want = format!("Subject: {subject}");
        logs::lines(&self.mailbox()).contains(&want)
    }

    pub fn wait_delivered(&self, subject: &str, timeout: Duration) -> Result<()> {
        let want = format!("Subject: {subject}");
        logs::wait_lines(&self.mailbox(), 1, timeout, |l| l == want, subject).map(drop)
    }

    /// The last lines of the lab's logs, for a failure message.
    pub fn logs_tail(&self) -> String {
        let tail = |p: &Path| {
            let l = logs::lines(p);
            l[l.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- maillog ({}) ---\n{}\n--- dovecot ---\n{}",
            self.maillog().display(),
            tail(&self.maillog()),
            self.dovecot.log()
        )
    }
}

impl Drop for MxLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs_tail());
            if let Some(f) = &self.fail2ban {
                eprintln!("--- fail2ban ---\n{}", f.log());
            }
        }
    }
}

/// One submission as the client: from [`MxNet::CLIENT_V4`] to 587, AUTH
/// PLAIN with the right password, one message, QUIT. Call it on a thread in
/// the client's namespace.
pub fn send_as_client(subject: &str) -> Result<()> {
    let to = SocketAddr::new(IpAddr::V4(MxNet::MX_V4), 587);
    let mut s = smtp::Session::connect(IpAddr::V4(MxNet::CLIENT_V4), to, Duration::from_secs(30))?;
    s.ehlo("client.lab.test")?;
    let r = s.auth(smtp::Mech::Plain, &format!("{USER}@{DOMAIN}"), PASSWORD)?;
    if r.code != 235 {
        bail!("the client's AUTH failed: {} {}", r.code, r.text);
    }
    let addr = format!("{USER}@{DOMAIN}");
    let r = s.message(&addr, &addr, subject)?;
    if r.code != 250 {
        bail!("the client's message was refused: {} {}", r.code, r.text);
    }
    s.quit()
}

/// Panics naming what is missing: the lab never skips.
fn require_tools() {
    let missing: Vec<&str> = ["postfix", "dovecot", "swaks", "script"]
        .into_iter()
        .filter(|t| crate::preflight::which(t).is_none())
        .chain(
            ["/usr/lib/postfix/sbin/master"]
                .into_iter()
                .filter(|p| !Path::new(p).exists()),
        )
        .collect();
    if !missing.is_empty() {
        panic!(
            "the mx lab needs Postfix, Dovecot and swaks; missing: {}. \
             `cargo xtask prereqs` installs them (postfix, dovecot-core, swaks).",
            missing.join(", ")
        );
    }
}

/// The number of lines of `log` once no line has been added to it for
/// `quiet` (or after `limit`, as it is then).
fn quiet_lines(log: &Path, quiet: Duration, limit: Duration) -> usize {
    let t0 = Instant::now();
    let mut n = logs::lines(log).len();
    let mut since = Instant::now();
    while since.elapsed() < quiet && t0.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
        let now = logs::lines(log).len();
        if now != n {
            n = now;
            since = Instant::now();
        }
    }
    n
}

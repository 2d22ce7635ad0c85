//! A lab whose agent runs a jail over a log file the test appends to, and
//! the log lines a mail server writes: what the end-to-end tests of the
//! watcher share.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp::control::{Request, Response};
use serde_json::Value;

use crate::{AgentOptions, Lab};

/// Frames per probe.
pub const N: u64 = 10;

/// A lab whose agent runs one jail over a log file in a temp dir.
pub struct Watch {
    pub lab: Lab,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Watch {
    /// `jail` is appended to a `[jails.sasl]` table reading the log file.
    pub fn start(jail: &str) -> Result<Self> {
        Self::start_with(jail, &[], |_| Ok(()))
    }

    /// `prepare` may write to the log before the agent starts.
    pub fn start_with(
        jail: &str,
        extra_args: &[&str],
        prepare: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Self> {
        Self::start_config(
            |log| {
                format!(
                    "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"{}\"]\nfindtime = \"10m\"\n{jail}\n",
                    log.display()
                )
            },
            extra_args,
            prepare,
        )
    }

    /// An agent with the configuration `config` makes for the log's path.
    pub fn start_config(
        config: impl FnOnce(&Path) -> String,
        extra_args: &[&str],
        prepare: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("f2x-e2e-").tempdir()?;
        let log = dir.path().join("mail.log");
        fs::write(&log, "")?;
        prepare(&log)?;
        let text = config(&log);
        Self::start_in(dir, log, &text, extra_args)
    }

    /// An agent running `config` (written into `dir`), whose log is `log`
    /// (a file the test appends to, or a journal file).
    pub fn start_in(
        dir: tempfile::TempDir,
        log: PathBuf,
        config: &str,
        extra_args: &[&str],
    ) -> Result<Self> {
        let config_path = dir.path().join("fail2xdp.toml");
        fs::write(&config_path, config)?;
        let opts = AgentOptions {
            config: Some(config_path),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            ..AgentOptions::default()
        };
        let lab = Lab::start_with(opts)?;
        let w = Watch { lab, log, dir };
        w.wait_ready()?;
        Ok(w)
    }

    /// `kill -9`: the agent gets no chance to save anything.
    pub fn kill9(&mut self) -> Result<()> {
        self.lab.agent.kill9().map(drop)
    }

    /// A new agent on the same pins, state and configuration.
    pub fn restart(&mut self) -> Result<()> {
        self.lab.agent.spawn()?;
        self.wait_ready()
    }

    /// The agent's own status (jails, sources), cheap to poll.
    pub fn agent_status(&self) -> Result<Value> {
        self.call(&Request::AgentStatus)
    }

    /// The agent attaches before it opens its sources: wait for its socket.
    pub fn wait_ready(&self) -> Result<()> {
        wait_for(
            "the agent's control socket",
            Duration::from_secs(20),
            || Ok(self.call(&Request::Ping).is_ok()),
        )
    }

    pub fn call(&self, req: &Request) -> Result<Value> {
        match self.lab.agent.client().call(req)? {
            Response::Json(v) => Ok(v),
            Response::Ok { message } => Ok(Value::String(message)),
            Response::Error { message } => bail!("agent: {message}"),
            Response::WrongInstance { serves } => bail!("agent serves {}", serves.display()),
        }
    }

    pub fn status(&self) -> Result<Value> {
        self.call(&Request::Status { jail: None })
    }

    /// The jail `sasl`'s counters (from the agent's cheap status).
    pub fn jail(&self) -> Result<Value> {
        let s = self.call(&Request::AgentStatus)?;
        s["jails"]
            .as_array()
            .and_then(|j| j.iter().find(|j| j["name"] == "sasl"))
            .cloned()
            .context("no jail sasl in status")
    }

    pub fn counter(&self, key: &str) -> Result<u64> {
        self.jail()?[key]
            .as_u64()
            .with_context(|| format!("no {key} in status"))
    }

    /// Current bans in the maps: net -> remaining seconds (None = permanent).
    pub fn bans(&self) -> Result<Vec<(String, Option<u64>)>> {
        let v = self.call(&Request::List)?;
        Ok(v.as_array()
            .context("list is not an array")?
            .iter()
            .filter(|b| b["expired"] != Value::Bool(true))
            .map(|b| {
                (
                    b["net"].as_str().unwrap_or("").to_string(),
                    b["remaining_secs"].as_u64(),
                )
            })
            .collect())
    }

    pub fn ban_of(&self, net: &str) -> Result<Option<Option<u64>>> {
        Ok(self
            .bans()?
            .into_iter()
            .find(|(n, _)| n == net)
            .map(|(_, r)| r))
    }

    /// Appends whole lines (text, or raw bytes) in one write.
    pub fn append<L: AsRef<[u8]>>(&self, lines: &[L]) -> Result<()> {
        append_to(&self.log, lines)
    }

    /// Appends and waits until the jail has seen every line.
    pub fn feed<L: AsRef<[u8]>>(&self, lines: &[L]) -> Result<()> {
        let before = self.counter("lines")?;
        self.append(lines)?;
        let want = before + lines.len() as u64;
        wait_for(
            "the agent to read the lines",
            Duration::from_secs(10),
            || Ok(self.counter("lines")? >= want),
        )
        .map_err(|e| self.with_log(e))
    }

    /// Waits for a ban of `net`; its remaining seconds (None: permanent).
    pub fn wait_banned(&self, net: &str) -> Result<Option<u64>> {
        let mut ban = None;
        wait_for(&format!("a ban of {net}"), Duration::from_secs(15), || {
            ban = self.ban_of(net)?;
            Ok(ban.is_some())
        })
        .map_err(|e| self.with_log(e))?;
        Ok(ban.flatten())
    }

    /// The agent's log and status, for a failure message.
    pub fn with_log(&self, e: anyhow::Error) -> anyhow::Error {
        let status = self
            .agent_status()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        e.context(format!(
            "agent status: {status}\n--- agent log ---\n{}",
            self.lab.agent.log()
        ))
    }

    pub fn delivered(&self, src: &str, port: u16) -> Result<u64> {
        self.lab.delivered(&self.lab.syn(src, port), N)
    }
}

pub fn append_to<L: AsRef<[u8]>>(path: &Path, lines: &[L]) -> Result<()> {
    let mut f = OpenOptions::new().append(true).create(true).open(path)?;
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l.as_ref());
        text.push(b'\n');
    }
    // One write: the agent sees whole lines.
    f.write_all(&text)?;
    Ok(())
}

pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A syslog line stamped `ago` before now, the way the mail server writes it.
pub fn stamped(ago: Duration, msg: &str) -> String {
    String::from_utf8_lossy(&stamped_bytes(ago, msg.as_bytes())).into_owned()
}

/// [`stamped`] for a message that need not be UTF-8.
pub fn stamped_bytes(ago: Duration, msg: &[u8]) -> Vec<u8> {
    let t = jiff::Timestamp::now() - jiff::SignedDuration::try_from(ago).expect("small duration");
    let stamp = t
        .to_zoned(jiff::tz::TimeZone::system())
        .strftime("%b %e %H:%M:%S")
        .to_string();
    [stamp.as_bytes(), b" mail ", msg].concat()
}

/// Distinct process ids, so no two lines are byte-identical (real logs never
/// are, and the file follower tells files apart by their first bytes).
pub fn pid() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1000);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub fn sasl_fail_ago(ip: &str, ago: Duration) -> String {
    stamped(
        ago,
        &format!(
            "postfix/smtpd[{}]: warning: unknown[{ip}]: SASL LOGIN authentication failed: authentication failure",
            pid()
        ),
    )
}

/// A SASL failure of `ip` whose user name the attacker chose, as raw bytes.
pub fn sasl_fail_as(ip: &str, user: &[u8], ago: Duration) -> Vec<u8> {
    let msg = format!(
        "postfix/smtpd[{}]: warning: unknown[{ip}]: SASL LOGIN authentication failed: authentication failure, sasl_username=",
        pid()
    );
    stamped_bytes(ago, &[msg.as_bytes(), user].concat())
}

pub fn sasl_fail(ip: &str) -> String {
    sasl_fail_ago(ip, Duration::ZERO)
}

pub fn fails(ip: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| sasl_fail(ip)).collect()
}

pub fn connect(ip: &str) -> String {
    stamped(
        Duration::ZERO,
        &format!(
            "postfix/smtpd[{}]: connect from mail.example.org[{ip}]",
            pid()
        ),
    )
}

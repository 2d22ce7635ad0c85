//! A real `fail2xdp` agent attached to the receiving veth of a [`NetnsPair`],
//! with its own pin dir, state dir and control socket, so tests can run in
//! parallel; and the CLI aimed at the same instance.

use std::{
    fs,
    io::Read,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp_common::{DISPATCHED_PIN_PREFIX, LINK_PIN_PREFIX, Stats, map};

use crate::netns::{Netns, NetnsPair, command_in, unique_name};

/// The `fail2xdp` binary under test: `$FAIL2XDP_BIN`, else `debug/fail2xdp`
/// in `$CARGO_TARGET_DIR`, else next to this test executable, else the
/// workspace's `target/debug`.
pub fn fail2xdp_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FAIL2XDP_BIN") {
        return PathBuf::from(p);
    }
    let mut candidates = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("debug/fail2xdp"));
    }
    // A test executable lives in <target>/<profile>/deps/.
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
    {
        candidates.push(profile_dir.join("fail2xdp"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/fail2xdp"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| candidates.remove(0))
}

/// Warns (once) when a source file of the agent or of its XDP program is
/// newer than the binary: the tests would judge yesterday's code.
fn warn_if_stale(bin: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
            return;
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut stack = vec![
            root.join("watcher/src"),
            root.join("ebpf/src"),
            root.join("common/src"),
        ];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t > built)
                {
                    eprintln!(
                        "warning: {} is newer than {}: run `cargo build -p fail2xdp` first",
                        path.display(),
                        bin.display()
                    );
                    return;
                }
            }
        }
    });
}

/// How to run the agent beyond the defaults.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// `--config`; `None` runs the built-in jails.
    pub config: Option<PathBuf>,
    /// `--xdp-mode`.
    pub xdp_mode: String,
    /// Further arguments after `run --iface <if>`.
    pub extra_args: Vec<String>,
    /// How long to wait for the program to be attached.
    pub start_timeout: Duration,
    /// Environment for the agent and every CLI command of the instance
    /// (e.g. `LIBXDP_BPFFS`, where libxdp's dispatcher pins are).
    pub env: Vec<(String, String)>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            config: None,
            xdp_mode: "native".into(),
            extra_args: Vec::new(),
            start_timeout: Duration::from_secs(60),
            env: Vec::new(),
        }
    }
}

/// The pinned XDP link as `bpftool link show` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: u64,
    pub prog_id: u64,
}

/// One `fail2xdp run` process in the receiving namespace of a pair. Drop
/// stops it, runs `fail2xdp detach` on its pin dir and removes the pin dir.
#[derive(Debug)]
pub struct Agent {
    bin: PathBuf,
    pin_dir: PathBuf,
    dir: tempfile::TempDir,
    netns: PathBuf,
    iface: String,
    opts: AgentOptions,
    child: Option<Child>,
}

impl Agent {
    /// Starts an agent on `pair.recv_if` and waits until its program is attached.
    pub fn start(pair: &NetnsPair) -> Result<Self> {
        Self::start_with(pair, AgentOptions::default())
    }

    pub fn start_with(pair: &NetnsPair, opts: AgentOptions) -> Result<Self> {
        let mut agent = Self::new(pair, opts)?;
        agent.spawn()?;
        Ok(agent)
    }

    /// [`Agent::start_with`] for `iface` in any namespace ([`Agent::new_on`]).
    pub fn start_with_on(ns: &Netns, iface: &str, opts: AgentOptions) -> Result<Self> {
        let mut agent = Self::new_on(ns, iface, opts)?;
        agent.spawn()?;
        Ok(agent)
    }

    /// An instance (pin dir, state dir, socket) with no process running yet:
    /// CLI commands work on its pins once [`Agent::spawn`] has created them.
    pub fn new(pair: &NetnsPair, opts: AgentOptions) -> Result<Self> {
        Self::new_on(&pair.recv_ns, &pair.recv_if, opts)
    }

    /// An agent for `iface` in `ns`, any namespace the test built (the mx
    /// lab's has no [`NetnsPair`]); otherwise as [`Agent::new`].
    pub fn new_on(ns: &Netns, iface: &str, opts: AgentOptions) -> Result<Self> {
        let bin = fail2xdp_bin();
        if !bin.is_file() {
            bail!(
                "fail2xdp binary not found at {} (build it with `cargo build -p fail2xdp`, or set FAIL2XDP_BIN)",
                bin.display()
            );
        }
        warn_if_stale(&bin);
        let dir = tempfile::Builder::new()
            .prefix("f2x-test-")
            .tempdir()
            .context("creating the agent's temp dir")?;
        fs::create_dir(dir.path().join("state")).context("creating the state dir")?;
        Ok(Self {
            bin,
            pin_dir: PathBuf::from("/sys/fs/bpf").join(unique_name("f2x-test")),
            dir,
            netns: ns.path(),
            iface: iface.to_string(),
            opts,
            child: None,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// A control-socket client addressing this instance.
    pub fn client(&self) -> fail2xdp::control::Client {
        fail2xdp::control::Client {
            socket: self.socket(),
            pin_dir: self.pin_dir.clone(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Where the agent's stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The net one of the agent's log lines bans: its human-format ban
    /// line, `... INFO ban addr=NET origin=...` (written once the map holds
    /// the ban). Benches time bans by these lines as they appear.
    pub fn ban_of(line: &str) -> Option<ipnet::IpNet> {
        let (_, rest) = line.split_once(" ban addr=")?;
        rest.split_whitespace().next()?.parse().ok()
    }

    /// The pin of the XDP link on the receiving veth.
    pub fn link_pin(&self) -> PathBuf {
        self.pin_dir
            .join(format!("{LINK_PIN_PREFIX}{}", self.iface))
    }

    /// The pin of the program when it runs inside libxdp's dispatcher.
    pub fn dispatched_pin(&self) -> PathBuf {
        self.pin_dir
            .join(format!("{DISPATCHED_PIN_PREFIX}{}", self.iface))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The receiving interface the agent attaches to.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Waits up to `timeout` for the agent to exit on its own (say, after a
    /// `Stop` request); its exit status, or None if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        while let Some(child) = self.child.as_mut() {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(Some(st));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }

    /// Runs `fail2xdp run` and waits until the pinned link carries a program
    /// it did not carry before (fresh attach, or replacement on restart).
    pub fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("agent already running");
        }
        let before = self.link_info().ok().map(|l| l.prog_id);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the agent log")?;
        let mut cmd = self.command()?;
        cmd.args([
            "run",
            "--iface",
            &self.iface,
            "--xdp-mode",
            &self.opts.xdp_mode,
        ]);
        if let Some(c) = &self.opts.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(&self.opts.extra_args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.child = Some(child);

        let deadline = Instant::now() + self.opts.start_timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "fail2xdp run exited with {status} before attaching; its log:\n{}",
                    self.log()
                );
            }
            if let Ok(l) = self.link_info()
                && Some(l.prog_id) != before
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "fail2xdp run did not attach to {} within {:?} ({} missing or unchanged); its log:\n{}",
                    self.iface,
                    self.opts.start_timeout,
                    self.link_pin().display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; returns how it ended.
    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        self.signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
    }

    /// SIGKILL: the agent gets no chance to clean up; the pinned link keeps
    /// the program attached.
    pub fn kill9(&mut self) -> Result<Option<ExitStatus>> {
        self.signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
    }

    fn signal_and_wait(&mut self, sig: i32, grace: Duration) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let pid = child.id() as i32;
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, sig) };
        let deadline = Instant::now() + grace;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() > deadline {
                child.kill().ok();
                let st = child.wait()?;
                bail!(
                    "agent ignored signal {sig} for {grace:?}; killed ({:?})",
                    st.signal()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `fail2xdp` in the receiving namespace, with no instance options.
    pub fn bare_command(&self) -> Result<Command> {
        command_in(&self.netns, &self.bin)
    }

    /// `fail2xdp` with this instance's global options, in the receiving namespace.
    pub fn command(&self) -> Result<Command> {
        let mut cmd = command_in(&self.netns, &self.bin)?;
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--socket")
            .arg(self.socket());
        Ok(cmd)
    }

    /// Runs a CLI command against this instance, whatever its outcome.
    pub fn cli_output(&self, args: &[&str]) -> Result<Output> {
        self.cli_output_within(args, Duration::from_secs(30))
    }

    /// [`cli_output`](Self::cli_output) for a command that may take up to `limit`.
    pub fn cli_output_within(&self, args: &[&str], limit: Duration) -> Result<Output> {
        let mut cmd = self.command()?;
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        // Drain both pipes while waiting: a long `list --json` must not block on a full pipe.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        // The CLI must answer promptly; a hang is a failure, not a stuck test run.
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                child.wait().ok();
                bail!(
                    "fail2xdp {} did not finish within {limit:?}",
                    args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.cli_output(args)?;
        if !out.status.success() {
            bail!(
                "fail2xdp {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `fail2xdp ban <target> [extra...]`, e.g. `&["--for", "2s", "--ports", "25"]`.
    pub fn ban(&self, target: &str, extra: &[&str]) -> Result<()> {
        let mut args = vec!["ban", target];
        args.extend_from_slice(extra);
        self.cli(&args).map(drop)
    }

    pub fn unban(&self, target: &str) -> Result<()> {
        self.cli(&["unban", target]).map(drop)
    }

    pub fn allow_add(&self, target: &str) -> Result<()> {
        self.cli(&["allow", "add", target]).map(drop)
    }

    /// `fail2xdp list --json`, parsed.
    pub fn list_json(&self) -> Result<serde_json::Value> {
        let out = self.cli(&["list", "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("list --json printed no JSON: {out}"))
    }

    /// The entry for `net` in `list --json` (an array of objects with the
    /// CIDR in "net"); a bare address means its /32 or /128.
    pub fn ban_entry(&self, net: &str) -> Result<Option<serde_json::Value>> {
        Ok(find_ban(&self.list_json()?, net).cloned())
    }

    /// Polls `list --json` until `net` is banned (e.g. by a jail reading a
    /// log the test wrote); returns its entry.
    pub fn wait_for_ban(&self, net: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(b) = self.ban_entry(net)? {
                return Ok(b);
            }
            if Instant::now() > deadline {
                bail!(
                    "{net} not banned within {timeout:?}; agent log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `fail2xdp status --json`, parsed.
    pub fn status_json(&self) -> Result<serde_json::Value> {
        let out = self.cli(&["status", "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("status --json printed no JSON: {out}"))
    }

    /// The XDP program's counters, summed over CPUs, read straight from the
    /// pinned STATS map (independent of the CLI under test).
    pub fn stats(&self) -> Result<Stats> {
        let path = self.pin_dir.join(map::STATS);
        let data = aya::maps::MapData::from_pin(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let arr: aya::maps::PerCpuArray<aya::maps::MapData, Stats> =
            aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))?;
        let mut total = Stats::default();
        for s in arr.get(&0, 0)?.iter() {
            total.add(s);
        }
        Ok(total)
    }

    /// Link and program id of the pinned XDP link; inside libxdp's
    /// dispatcher, link id 0 and the id of the program pinned there.
    pub fn link_info(&self) -> Result<LinkInfo> {
        let pin = self.link_pin();
        let ext = self.dispatched_pin();
        if !pin.exists() && ext.exists() {
            let out = Command::new("bpftool")
                .args(["-j", "prog", "show", "pinned"])
                .arg(&ext)
                .output()
                .context("running bpftool")?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("bpftool prog show pinned {}", ext.display()))?;
            return match v.get("id").and_then(serde_json::Value::as_u64) {
                Some(prog_id) => Ok(LinkInfo { id: 0, prog_id }),
                None => bail!("unexpected bpftool output: {v}"),
            };
        }
        if !pin.exists() {
            bail!("{} does not exist", pin.display());
        }
        let out = Command::new("bpftool")
            .args(["-j", "link", "show", "pinned"])
            .arg(&pin)
            .output()
            .context("running bpftool")?;
        if !out.status.success() {
            bail!(
                "bpftool link show pinned {}: {}",
                pin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let field = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        match (field("id"), field("prog_id")) {
            (Some(id), Some(prog_id)) => Ok(LinkInfo { id, prog_id }),
            _ => bail!("unexpected bpftool output: {v}"),
        }
    }
}

/// The ban for `net` in `list --json` output; see [`Agent::ban_entry`].
pub fn find_ban<'a>(list: &'a serde_json::Value, net: &str) -> Option<&'a serde_json::Value> {
    let want = match (net.contains('/'), net.contains(':')) {
        (true, _) => net.to_string(),
        (false, false) => format!("{net}/32"),
        (false, true) => format!("{net}/128"),
    };
    list.as_array()?
        .iter()
        .find(|b| b.get("net").and_then(serde_json::Value::as_str) == Some(want.as_str()))
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warning: stopping the agent: {e:#}");
        }
        if self.pin_dir.exists() {
            match self.cli_output(&["detach"]) {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "warning: fail2xdp detach: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("warning: fail2xdp detach: {e:#}"),
            }
        }
        // Unpinning the link (its last reference once the agent is gone) detaches
        // the program even when `detach` failed.
        if self.pin_dir.exists()
            && let Err(e) = fs::remove_dir_all(&self.pin_dir)
        {
            eprintln!("warning: removing {}: {e}", self.pin_dir.display());
        }
        if std::thread::panicking() {
            eprintln!(
                "--- agent log ({}) ---\n{}",
                self.log_path().display(),
                self.log()
            );
        }
    }
}

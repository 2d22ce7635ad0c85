//! Progress bars on a terminal (tmux, the pane's output piped to a file),
//! nothing extra when piped: `fail2xdp test` over a large log, and `run
//! --replay` of one (root for the agent; `cargo build -p fail2xdp` first).

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp_tests::{NetnsPair, fail2xdp_bin, require_privileges, unique_name};

const LINES: usize = 300_000;

/// A mail log of `LINES` lines, old enough that nothing in it bans.
fn big_log(path: &Path) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..LINES {
        let ip = format!("203.0.113.{}", i % 200 + 1);
        if i % 10 == 0 {
            writeln!(
                f,
                "Jan  3 04:05:06 mail postfix/smtpd[{i}]: warning: unknown[{ip}]: SASL LOGIN authentication failed: authentication failure"
            )?;
        } else {
            writeln!(
                f,
                "Jan  3 04:05:06 mail postfix/smtpd[{i}]: connect from mail.example.org[{ip}]"
            )?;
        }
    }
    f.flush()?;
    Ok(())
}

/// A tmux server of its own running `cmd`, everything the pane prints
/// copied to `out` (what a terminal user saw, escapes and all).
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cmd: &str, out: &Path) -> Result<Tmux> {
        let t = Tmux {
            socket: unique_name("f2x-tmux"),
        };
        // The command waits for the pipe to be in place before it runs.
        let ready = out.with_extension("ready");
        let script = format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exec {cmd}",
            ready.display()
        );
        let o = t
            .tmux()
            .args(["new-session", "-d", "-s", "p", "-x", "160", "-y", "40"])
            .arg(script)
            .output()
            .context("running tmux (Debian package tmux; `cargo xtask prereqs` installs it)")?;
        anyhow::ensure!(o.status.success(), "tmux: {o:?}");
        let o = t
            .tmux()
            .args(["pipe-pane", "-t", "p", "-o"])
            .arg(format!("cat >> {}", out.display()))
            .output()?;
        anyhow::ensure!(o.status.success(), "pipe-pane: {o:?}");
        std::fs::write(&ready, "")?;
        Ok(t)
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).env_remove("TMUX");
        c
    }

    fn alive(&self) -> bool {
        self.tmux()
            .args(["has-session", "-t", "p"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn keys(&self, keys: &[&str]) -> Result<()> {
        let o = self
            .tmux()
            .args(["send-keys", "-t", "p"])
            .args(keys)
            .output()?;
        anyhow::ensure!(o.status.success(), "send-keys: {o:?}");
        Ok(())
    }

    fn wait_exit(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.alive() {
            if Instant::now() > deadline {
                bail!("the program in tmux did not end within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
    }
}

fn wait_for_text(path: &Path, what: &str, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let t = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        if t.contains(what) {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("no {what:?} within {limit:?} in what the terminal showed:\n{t}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn test_shows_a_bar_on_a_terminal_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("mail.log");
    big_log(&log)?;
    let bin = fail2xdp_bin();

    // Piped: the summary and nothing else.
    let o = Command::new(&bin)
        .arg("test")
        .arg(&log)
        .args(["--filter", "postfix-sasl", "--now", "2026-01-04T00:00:00Z"])
        .stdin(Stdio::null())
        .output()?;
    assert!(o.status.success(), "{o:?}");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(out.contains(&format!("{} total", LINES / 10)), "{out}");
    assert!(
        !err.contains("ETA") && !out.contains("ETA") && !err.contains('\r'),
        "{err}"
    );

    // On a terminal: the bar, then the same summary.
    let shown = dir.path().join("tty.out");
    let t = Tmux::start(
        &format!(
            "{} test {} --filter postfix-sasl --now 2026-01-04T00:00:00Z; sleep 30",
            bin.display(),
            log.display()
        ),
        &shown,
    )?;
    let screen = wait_for_text(&shown, "Time:", Duration::from_secs(120))?;
    assert!(screen.contains("ETA"), "no bar on the terminal:\n{screen}");
    assert!(
        screen.contains(&format!("{} total", LINES / 10)),
        "{screen}"
    );
    drop(t);
    Ok(())
}

/// `run --replay` of a large log on a terminal: a bar while it reads, a
/// line saying how many lines it replayed.
#[test]
fn replay_shows_a_bar_on_a_terminal() -> Result<()> {
    require_privileges();
    let pair = NetnsPair::new()?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("mail.log");
    big_log(&log)?;
    let config = dir.path().join("fail2xdp.toml");
    std::fs::write(
        &config,
        format!(
            "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"{}\"]\nmaxretry = 3\nbantime = \"1h\"\n",
            log.display()
        ),
    )?;
    let pins = std::path::PathBuf::from("/sys/fs/bpf").join(unique_name("f2x-test"));
    let inst = format!(
        "--pin-dir {} --state-dir {} --socket {}",
        pins.display(),
        dir.path().join("state").display(),
        dir.path().join("control.sock").display()
    );
    let bin = fail2xdp_bin();
    let shown = dir.path().join("tty.out");
    let t = Tmux::start(
        &format!(
            "nsenter --net={} {} {inst} run --iface {} --replay --config {}",
            pair.recv_ns.path().display(),
            bin.display(),
            pair.recv_if,
            config.display()
        ),
        &shown,
    )?;
    let cleanup = || {
        // SIGINT stops the agent (tmux's SIGHUP would only reload it).
        let _ = t.keys(&["C-c"]);
        let _ = t.wait_exit(Duration::from_secs(20));
        let _ = Command::new("nsenter")
            .arg(format!("--net={}", pair.recv_ns.path().display()))
            .arg(&bin)
            .args(inst.split(' '))
            .arg("detach")
            .output();
        let _ = std::fs::remove_dir_all(&pins);
    };
    let result = (|| -> Result<()> {
        let screen = wait_for_text(&shown, "replayed ", Duration::from_secs(240))?;
        assert!(screen.contains("replay ["), "no bar:\n{screen}");
        assert!(screen.contains("lines/s"), "{screen}");
        assert!(
            screen.contains(&format!("replayed {LINES} lines")),
            "{screen}"
        );
        Ok(())
    })();
    cleanup();
    result
}

//! `fail2xdp top` in a real terminal (tmux: send-keys, capture-pane) over a
//! real agent while a banned source floods it (root; `cargo build -p
//! fail2xdp` first).

use std::{
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp_tests::{
    fail2xdp_bin, unique_name,
    watch::{Watch, fails},
};

const SMTP: u16 = 25;
const JAIL: &str = "maxretry = 3\nbantime = \"1h\"\nports = \"all\"\n";

/// A tmux server of its own (its own socket), one session running a command.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cmd: &str, width: u16, height: u16) -> Result<Tmux> {
        let t = Tmux {
            socket: unique_name("f2x-tmux"),
        };
        let out = t
            .tmux()
            .args(["new-session", "-d", "-s", "top", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(cmd)
            .output()
            .context("running tmux (Debian package tmux; `cargo xtask prereqs` installs it)")?;
        if !out.status.success() {
            bail!("tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(t)
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).env_remove("TMUX");
        c
    }

    fn keys(&self, keys: &[&str]) -> Result<()> {
        let out = self
            .tmux()
            .args(["send-keys", "-t", "top"])
            .args(keys)
            .output()?;
        anyhow::ensure!(out.status.success(), "send-keys {keys:?}: {out:?}");
        Ok(())
    }

    fn screen(&self) -> Result<String> {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()?;
        anyhow::ensure!(out.status.success(), "capture-pane: {out:?}");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn alive(&self) -> bool {
        self.tmux()
            .args(["has-session", "-t", "top"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits until the screen satisfies `cond`; the screen.
    fn wait(&self, what: &str, mut cond: impl FnMut(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen()?;
            if cond(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
    }
}

/// The drops/s column of the row of `addr` in the banned-sources table.
fn rate_of(screen: &str, addr: &str) -> Option<f64> {
    let line = screen.lines().find(|l| l.contains(addr))?;
    let after = &line[line.find(addr)? + addr.len()..];
    // ORIGIN, then DROPS/S.
    after.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn top_shows_the_flood_sorts_and_explains() -> Result<()> {
    let mut w = Watch::start(JAIL)?;
    w.feed(&fails("203.0.113.41", 3))?;
    w.wait_banned("203.0.113.41/32")?;
    w.lab.agent.ban("198.51.100.41", &["--for", "1d"])?;

    let bin = fail2xdp_bin();
    let a = &w.lab.agent;
    let cmd = format!(
        "{} --pin-dir {} --state-dir {} --socket {} top",
        bin.display(),
        a.pin_dir().display(),
        a.state_dir().display(),
        a.socket().display()
    );
    let stop = AtomicBool::new(false);
    let flooder = w.lab.syn("198.51.100.41", SMTP);
    std::thread::scope(|s| -> Result<()> {
        let flood = s.spawn(|| w.lab.tx.flood(&[flooder], &stop, Duration::from_secs(60)));
        let result = (|| -> Result<()> {
            let t = Tmux::start(&cmd, 150, 45)?;
            // The flooding source, dropping now, on top; traffic and jails shown.
            let screen = t.wait("the flood in top", |s| {
                rate_of(s, "198.51.100.41").is_some_and(|r| r > 0.0) && s.contains("203.0.113.41")
            })?;
            println!("{screen}");
            let rows: Vec<&str> = screen
                .lines()
                .filter(|l| l.contains("198.51.100.41") || l.contains("203.0.113.41"))
                .collect();
            assert!(
                rows.first().is_some_and(|l| l.contains("198.51.100.41")),
                "the busiest source is not first:\n{screen}"
            );
            assert!(screen.contains("protection: enforcing"), "{screen}");
            assert!(
                screen.contains("sasl") && screen.contains("BANS_V4"),
                "{screen}"
            );
            let dropped = screen
                .lines()
                .find(|l| l.contains("dropped") && l.contains("pkt/s"))
                .context("no traffic line")?;
            assert!(!dropped.contains("dropped          0 pkt/s"), "{dropped}");

            // Sort keys cycle.
            t.keys(&["s"])?;
            t.wait("sort by drops", |s| s.contains("by drops "))?;
            t.keys(&["s", "s"])?;
            t.wait("sort by address", |s| s.contains("by address"))?;
            // Top row in address order, then explain it.
            t.keys(&["Up", "Up", "Up", "Enter"])?;
            let screen = t.wait("the explanation", |s| s.contains("explain 198.51.100.41"))?;
            println!("{screen}");
            assert!(screen.contains("manual"), "{screen}");
            t.keys(&["Escape"])?;
            t.wait("the popup closed", |s| !s.contains("explain 198.51.100.41"))?;
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        flood.join().expect("flood thread")?;
        result
    })?;

    // Without an agent, top reads the maps alone.
    w.lab.agent.stop()?;
    let t = Tmux::start(&cmd, 150, 45)?;
    let screen = t.wait("top without an agent", |s| s.contains("no agent runs"))?;
    assert!(screen.contains("198.51.100.41"), "{screen}");
    t.keys(&["q"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.alive() {
        anyhow::ensure!(Instant::now() < deadline, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(100));
    }
    w.restart()?;
    Ok(())
}

//! Debian's fail2ban as the benchmark's peer: a real fail2ban-server in mx,
//! its own configuration directory (Debian's filters, actions and jail.conf
//! linked in, nothing of /etc/fail2ban/jail.d), the `postfix` jail in
//! mode=auth on the lab's maillog with the pyinotify backend, and the
//! nftables action, whose table lives in mx's namespace and goes with it.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::daemon::Daemon;
use crate::netns::Netns;

/// Debian's configuration, read (never written) through links.
const SYSTEM_CONF: &str = "/etc/fail2ban";

#[derive(Debug)]
pub struct Fail2ban {
    daemon: Option<Daemon>,
    conf: PathBuf,
    log: PathBuf,
    socket: PathBuf,
}

impl Fail2ban {
    pub fn start(mx: &Netns, dir: &Path, maillog: &Path) -> Result<Self> {
        if !Path::new(SYSTEM_CONF).join("jail.conf").exists() {
            bail!("{SYSTEM_CONF}/jail.conf missing: is fail2ban installed? (cargo xtask prereqs)");
        }
        let conf = dir.join("fail2ban");
        fs::create_dir_all(conf.join("jail.d")).context("creating fail2ban's config dir")?;
        for name in [
            "fail2ban.conf",
            "jail.conf",
            "paths-common.conf",
            "paths-debian.conf",
            "filter.d",
            "action.d",
        ] {
            std::os::unix::fs::symlink(Path::new(SYSTEM_CONF).join(name), conf.join(name))
                .with_context(|| format!("linking {SYSTEM_CONF}/{name}"))?;
        }
        let log = dir.join("fail2ban.log");
        let socket = dir.join("fail2ban.sock");
        fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {}\nsocket = {}\npidfile = {}\ndbfile = :memory:\n",
                log.display(),
                socket.display(),
                dir.join("fail2ban.pid").display()
            ),
        )?;
        // Debian's postfix jail as shipped (maxretry 5, findtime and bantime
        // 10m, ports smtp,465,submission), in mode=auth, on this log.
        fs::write(
            conf.join("jail.local"),
            format!(
                "[DEFAULT]\nbanaction = nftables\nbanaction_allports = nftables[type=allports]\n\n\
                 [postfix]\nenabled = true\nmode = auth\nbackend = pyinotify\nlogpath = {}\n",
                maillog.display()
            ),
        )?;
        let mut cmd = mx
            .command("fail2ban-server")
            .context("fail2ban-server (is fail2ban installed?)")?;
        cmd.arg("-f").arg("-x").arg("-c").arg(&conf);
        cmd.arg("-s").arg(&socket);
        let mut daemon = Daemon::spawn("fail2ban-server", cmd, &dir.join("fail2ban.out"))?;
        let l = log.clone();
        daemon.wait_ready(
            Duration::from_secs(60),
            || {
                fs::read_to_string(&l)
                    .unwrap_or_default()
                    .contains("Jail 'postfix' started")
            },
            || format!("its log:\n{}", fs::read_to_string(&l).unwrap_or_default()),
        )?;
        Ok(Self {
            daemon: Some(daemon),
            conf,
            log,
            socket,
        })
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().and_then(Daemon::pid)
    }

    pub fn conf_dir(&self) -> &Path {
        &self.conf
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The address a fail2ban log line bans, from `... [postfix] Ban ADDR`.
    pub fn ban_of(line: &str) -> Option<&str> {
        let (_, rest) = line.split_once("] Ban ")?;
        Some(rest.trim())
    }

    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop(Duration::from_secs(15));
        }
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::Fail2ban;

    #[test]
    fn reads_ban_lines() {
        assert_eq!(
            Fail2ban::ban_of(
                "2026-12-01 21:40:01,123 fail2ban.actions        [123]: NOTICE  [postfix] Ban 203.0.113.11"
            ),
            Some("203.0.113.11")
        );
        assert_eq!(
            Fail2ban::ban_of(
                "2026-12-01 21:40:01,123 fail2ban.actions        [123]: NOTICE  [postfix] Unban 203.0.113.11"
            ),
            None
        );
    }
}

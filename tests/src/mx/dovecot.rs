//! Dovecot as Postfix's SASL server only: its own base_dir and config file
//! (`dovecot -F -c FILE`), no mail protocols, a passwd-file of the lab's
//! users, and the auth listener in Postfix's queue (`private/auth`).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};

use super::{daemon::Daemon, postfix::DOMAIN};
use crate::netns::Netns;

#[derive(Debug)]
pub struct Dovecot {
    daemon: Option<Daemon>,
    log: PathBuf,
}

impl Dovecot {
    /// Starts Dovecot in `mx` for `users` ((local part, password)) and waits
    /// for its listener at `sasl_socket`.
    pub fn start(
        mx: &Netns,
        dir: &Path,
        sasl_socket: &Path,
        users: &[(&str, &str)],
    ) -> Result<Self> {
        let base = dir.join("dovecot");
        fs::create_dir_all(&base).context("creating dovecot's base_dir")?;
        // The auth process (user dovecot) reads this file: it and the lab
        // directory must be readable to others, or every login fails with
        // "reason unavailable".
        let users_file = dir.join("dovecot-users");
        let text: String = users
            .iter()
            .map(|(u, p)| format!("{u}@{DOMAIN}:{{PLAIN}}{p}\n"))
            .collect();
        fs::write(&users_file, text).context("writing dovecot's users file")?;
        fs::set_permissions(&users_file, fs::Permissions::from_mode(0o644))?;
        let log = dir.join("dovecot.log");
        let conf = dir.join("dovecot.conf");
        let (b, u, l, s) = (
            base.display(),
            users_file.display(),
            log.display(),
            sasl_socket.display(),
        );
        fs::write(
            &conf,
            format!(
                "# The mx lab's Dovecot: SASL for Postfix only; see tests/src/mx/dovecot.rs.
base_dir = {b}
state_dir = {b}
log_path = {l}
protocols =
# Required non-empty; no protocol listens anyway.
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {u}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {s} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"
            ),
        )
        .context("writing dovecot.conf")?;
        let mut cmd = mx
            .command("dovecot")
            .context("dovecot (is dovecot-core installed? cargo xtask prereqs)")?;
        cmd.arg("-F").arg("-c").arg(&conf);
        let mut daemon = Daemon::spawn("dovecot", cmd, &dir.join("dovecot.out"))?;
        daemon.wait_ready(
            Duration::from_secs(30),
            || sasl_socket.exists(),
            || format!("its log:\n{}", fs::read_to_string(&log).unwrap_or_default()),
        )?;
        Ok(Self {
            daemon: Some(daemon),
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().and_then(Daemon::pid)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

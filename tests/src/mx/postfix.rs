//! One Postfix instance of its own (`postfix -c DIR`, no postmulti): queue,
//! data and config under the lab directory, smtpd on 25 and submission on
//! 587 of mx's addresses only, SASL through Dovecot, virtual(8) delivering
//! to an mbox per user, and Postfix's own `maillog_file` (there is no syslog
//! daemon here). Nothing is chrooted.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{
    MxNet,
    daemon::Daemon,
    logs::{self, Event},
    user_ids,
};
use crate::netns::Netns;

/// Domain whose mailboxes the lab's Postfix holds.
pub const DOMAIN: &str = "lab.test";
/// The uid and gid mail is delivered as (mailboxes belong to nobody).
const MAILBOX_OWNER: &str = "nobody";

#[derive(Debug)]
pub struct Postfix {
    master: Option<Daemon>,
    etc: PathBuf,
    dir: PathBuf,
    /// `syslog_name`, the program name in each log line.
    syslog_name: String,
}

impl Postfix {
    /// Writes the configuration for `users` (local parts of [`DOMAIN`]) and
    /// creates the queue, in `dir`; [`Postfix::start`] runs it once the SASL
    /// socket is in place. `id` (letters and digits) makes the instance's
    /// names unique on the host.
    pub fn prepare(mx: &Netns, dir: &Path, id: &str, users: &[&str]) -> Result<Self> {
        let etc = dir.join("postfix");
        for d in [
            &etc,
            &dir.join("queue"),
            &dir.join("mail"),
            &dir.join("data"),
        ] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let (postfix_uid, postfix_gid) = user_ids("postfix")?;
        let (box_uid, box_gid) = user_ids(MAILBOX_OWNER)?;
        std::os::unix::fs::chown(dir.join("mail"), Some(box_uid), Some(box_gid))
            .context("chown of the mailbox directory")?;
        std::os::unix::fs::chown(dir.join("data"), Some(postfix_uid), Some(postfix_gid))
            .context("chown of the data directory")?;
        let syslog_name = format!("postfix-{id}");
        let d = dir.display();
        let main_cf = format!(
            "# The mx lab's Postfix ({id}); see tests/src/mx/postfix.rs.
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
syslog_name = {syslog_name}
myhostname = {id}.{DOMAIN}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination =
mynetworks =
inet_interfaces = {v4}, [{v6}]
inet_protocols = all
mail_owner = postfix
setgid_group = postdrop
# Clients are named by address only: no DNS from the lab.
smtpd_peername_lookup = no
smtpd_banner = $myhostname ESMTP
smtputf8_enable = no
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = texthash:{d}/postfix/mailboxes
virtual_uid_maps = static:{box_uid}
virtual_gid_maps = static:{box_gid}
",
            v4 = MxNet::MX_V4,
            v6 = MxNet::MX_V6,
        );
        // chroot "n" everywhere: a chrooted smtpd would need copies of the
        // lab's files inside the queue directory.
        let master_cf = format!(
            "smtp       inet  n  -  n  -     -  smtpd
submission inet  n  -  n  -     -  smtpd
  -o syslog_name={syslog_name}/submission
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
pickup     unix  n  -  n  60    1  pickup
cleanup    unix  n  -  n  -     0  cleanup
qmgr       unix  n  -  n  300   1  qmgr
rewrite    unix  -  -  n  -     -  trivial-rewrite
bounce     unix  -  -  n  -     0  bounce
defer      unix  -  -  n  -     0  bounce
trace      unix  -  -  n  -     0  bounce
verify     unix  -  -  n  -     1  verify
flush      unix  n  -  n  1000? 0  flush
proxymap   unix  -  -  n  -     -  proxymap
showq      unix  n  -  n  -     -  showq
error      unix  -  -  n  -     -  error
retry      unix  -  -  n  -     -  error
discard    unix  -  -  n  -     -  discard
virtual    unix  -  n  n  -     -  virtual
anvil      unix  -  -  n  -     1  anvil
scache     unix  -  -  n  -     1  scache
postlog    unix-dgram n - n  -  1  postlogd
"
        );
        let mailboxes: String = users
            .iter()
            .map(|u| format!("{u}@{DOMAIN} {u}\n"))
            .collect();
        for (name, text) in [
            ("main.cf", main_cf.as_str()),
            ("master.cf", master_cf.as_str()),
            ("mailboxes", mailboxes.as_str()),
        ] {
            fs::write(etc.join(name), text).with_context(|| format!("writing {name}"))?;
        }
        let pf = Self {
            master: None,
            etc,
            dir: dir.to_path_buf(),
            syslog_name,
        };
        // `postfix check` creates the queue's directories with their owners
        // (it needs the listen addresses, hence the namespace).
        let out = mx
            .command("postfix")?
            .arg("-c")
            .arg(&pf.etc)
            .arg("check")
            .output()
            .context("running `postfix check` (is postfix installed? cargo xtask prereqs)")?;
        if !out.status.success() {
            bail!(
                "postfix -c {} check failed ({}): {}",
                pf.etc.display(),
                out.status,
                pf.diagnose(mx)
            );
        }
        Ok(pf)
    }

    /// Runs the master in the foreground and waits until both ports answer.
    pub fn start(&mut self, mx: &Netns) -> Result<()> {
        let mut cmd = mx.command("/usr/lib/postfix/sbin/master")?;
        cmd.arg("-d").arg("-c").arg(&self.etc);
        let mut master = Daemon::spawn("postfix master", cmd, &self.dir.join("master.out"))?;
        let log = self.maillog();
        master.wait_ready(
            Duration::from_secs(30),
            || {
                [25, 587].iter().all(|&port| {
                    let to = SocketAddr::new(IpAddr::V4(MxNet::MX_V4), port);
                    mx.run(|| banner(to)).ok().flatten().is_some()
                })
            },
            || format!("its log:\n{}", fs::read_to_string(&log).unwrap_or_default()),
        )?;
        // smtpd logs the probes' disconnects after they have gone: wait for
        // them, so whoever reads the log next starts on a quiet file.
        let me = IpAddr::V4(MxNet::MX_V4);
        let probes = logs::count(&log, Event::Connect, me);
        logs::wait_lines(
            &log,
            probes,
            Duration::from_secs(10),
            |l| Event::Disconnect.is(l, me),
            "the readiness probes' disconnects",
        )?;
        self.master = Some(master);
        Ok(())
    }

    pub fn maillog(&self) -> PathBuf {
        self.dir.join("maillog")
    }

    /// The program name of its smtpd on port 25 in log lines (`NAME/smtpd`).
    pub fn syslog_name(&self) -> &str {
        &self.syslog_name
    }

    /// The mbox virtual(8) delivers `user`'s mail to.
    pub fn mailbox(&self, user: &str) -> PathBuf {
        self.dir.join("mail").join(user)
    }

    /// Where smtpd asks Dovecot: `smtpd_sasl_path` in the queue's private dir.
    pub fn sasl_socket(&self) -> PathBuf {
        self.dir.join("queue/private/auth")
    }

    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().and_then(Daemon::pid)
    }

    pub fn check_running(&mut self) -> Result<()> {
        match self.master.as_mut() {
            Some(m) => m.check_running(),
            None => bail!("postfix was not started"),
        }
    }

    /// Postfix tells why a command failed on a terminal or in its log only:
    /// run `postfix check` again under script(1) to see it.
    fn diagnose(&self, mx: &Netns) -> String {
        let cmd = format!("postfix -c {} check", self.etc.display());
        let tty = mx
            .command("script")
            .and_then(|mut c| {
                c.args(["-qec", &cmd, "/dev/null"])
                    .output()
                    .context("running script(1)")
            })
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| format!("{e:#}"));
        let log = fs::read_to_string(self.maillog()).unwrap_or_default();
        format!("{tty}\n{log}")
    }

    /// Stops the master (it stops its children); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut m) = self.master.take() {
            m.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the greeting of the server at `to`, then says QUIT; `None` if it
/// does not answer with 220 within a second.
fn banner(to: SocketAddr) -> Option<String> {
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let _ = (&s).write_all(b"QUIT\r\n");
    line.starts_with("220 ").then_some(line)
}

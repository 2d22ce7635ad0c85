//! fail2ban-client's habits with a real agent, real pins and real packets
//! (root; `cargo build -p fail2xdp` first): `banned`, `set JAIL
//! banip|unbanip`, `get`, `ping`, `unban --all [--jail]`, `ban --jail`
//! taking the jail's bantime and ports, and the configuration helpers.
//!
//! Attackers are 203.0.113.0/24, bans by hand 198.51.100.0/24.

use std::{process::Command, time::Duration};

use anyhow::Result;
use fail2xdp_tests::{
    fail2xdp_bin,
    watch::{N, Watch},
};

const SMTP: u16 = 25;
const HTTPS: u16 = 443;
/// Bans of jail `sasl` last an hour, double for each earlier ban, and cover SMTP only.
const JAIL: &str = "maxretry = 3\nbantime = \"1h\"\nports = \"smtp\"\nincrement = { factor = 2.0, max = \"1d\" }\n";

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Seconds left on the ban of `net` (None: not banned).
fn remaining(w: &Watch, net: &str) -> Result<Option<u64>> {
    Ok(w.lab
        .agent
        .ban_entry(net)?
        .and_then(|b| b["remaining_secs"].as_u64()))
}

fn near(secs: Option<u64>, want: u64) -> bool {
    secs.is_some_and(|s| s + 30 >= want && s <= want)
}

#[test]
fn set_get_banned_and_ping_work_as_in_fail2ban() -> Result<()> {
    let mut w = Watch::start(JAIL)?;
    let a = &w.lab.agent;
    assert!(a.cli(&["ping"])?.starts_with("pong: fail2xdp"));
    assert_eq!(a.cli(&["get", "sasl", "bantime"])?.trim(), "3600");
    assert_eq!(a.cli(&["get", "sasl", "findtime"])?.trim(), "600");
    assert_eq!(a.cli(&["get", "sasl", "maxretry"])?.trim(), "3");
    assert_eq!(a.cli(&["get", "sasl", "ports"])?.trim(), "25");
    let o = a.cli_output(&["get", "nosuch", "bantime"])?;
    assert!(
        !o.status.success() && out(&o).contains("jails: sasl"),
        "{}",
        out(&o)
    );

    // banip: the jail's bantime and ports, in its name.
    a.cli(&["set", "sasl", "banip", "203.0.113.80", "203.0.113.81"])?;
    for n in ["203.0.113.80", "203.0.113.81"] {
        let b = a.ban_entry(n)?.expect("banned");
        assert_eq!(b["origin"], "sasl", "{b}");
        assert_eq!(b["ports"], serde_json::json!([25]), "{b}");
        assert!(near(b["remaining_secs"].as_u64(), 3600), "{b}");
    }
    assert_eq!(w.delivered("203.0.113.80", SMTP)?, 0);
    assert_eq!(
        w.delivered("203.0.113.80", HTTPS)?,
        N,
        "the jail's ports only"
    );
    assert_eq!(a.cli(&["banned", "203.0.113.80"])?.trim(), "sasl");
    let all = a.cli(&["banned"])?;
    assert!(all.contains("sasl: 203.0.113.80 203.0.113.81"), "{all}");
    let o = a.cli_output(&["banned", "203.0.113.99"])?;
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));

    // unbanip lifts the jail's ban; banip again is a repeat offence: twice as long.
    a.cli(&["set", "sasl", "unbanip", "203.0.113.80"])?;
    assert_eq!(w.delivered("203.0.113.80", SMTP)?, N);
    a.cli(&["set", "sasl", "banip", "203.0.113.80"])?;
    assert!(
        near(remaining(&w, "203.0.113.80")?, 7200),
        "{:?}",
        remaining(&w, "203.0.113.80")?
    );

    // Another origin's claim keeps an address banned through unbanip.
    a.ban("203.0.113.81", &["--for", "1d"])?;
    let o = a.cli_output(&["set", "sasl", "unbanip", "203.0.113.81"])?;
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("stays banned by manual"), "{}", out(&o));
    assert_eq!(w.delivered("203.0.113.81", SMTP)?, 0);

    // `ban --jail` takes what it is not given from the jail.
    a.ban("198.51.100.20", &["--jail", "sasl"])?;
    let b = a.ban_entry("198.51.100.20")?.expect("banned");
    assert!(near(b["remaining_secs"].as_u64(), 3600), "{b}");
    assert_eq!(b["ports"], serde_json::json!([25]), "{b}");
    a.ban(
        "198.51.100.21",
        &["--jail", "sasl", "--for", "10m", "--ports", "all"],
    )?;
    let b = a.ban_entry("198.51.100.21")?.expect("banned");
    assert!(near(b["remaining_secs"].as_u64(), 600), "{b}");
    assert_eq!(b["ports"], serde_json::json!([]), "{b}");

    // Without the agent: the jails' rules it last saved.
    w.lab.agent.stop()?;
    let a = &w.lab.agent;
    let o = a.cli_output(&["ping"])?;
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert_eq!(a.cli(&["get", "sasl", "bantime"])?.trim(), "3600");
    a.cli(&["set", "sasl", "banip", "203.0.113.90"])?;
    let b = a.ban_entry("203.0.113.90")?.expect("banned");
    assert!(near(b["remaining_secs"].as_u64(), 3600), "{b}");
    assert_eq!(w.delivered("203.0.113.90", SMTP)?, 0);
    w.restart()?;
    Ok(())
}

#[test]
fn unban_all_with_and_without_a_jail() -> Result<()> {
    let w = Watch::start(JAIL)?;
    let a = &w.lab.agent;
    a.cli(&["set", "sasl", "banip", "203.0.113.30", "203.0.113.31"])?;
    a.ban("198.51.100.30", &[])?;
    // Claimed by both: the manual ban keeps it banned.
    a.ban("203.0.113.31", &["--for", "1d"])?;
    let o = a.cli(&["unban", "--all", "--jail", "sasl"])?;
    assert!(
        o.contains("unbanned 1 network(s) of sasl; 1 stay banned"),
        "{o}"
    );
    assert_eq!(w.delivered("203.0.113.30", SMTP)?, N);
    assert_eq!(w.delivered("203.0.113.31", SMTP)?, 0);
    assert_eq!(w.delivered("198.51.100.30", SMTP)?, 0);
    assert_eq!(a.cli(&["banned", "203.0.113.31"])?.trim(), "manual");
    let o = a.cli(&["unban", "--all"])?;
    assert!(o.contains("unbanned 2 network(s)"), "{o}");
    for n in ["203.0.113.31", "198.51.100.30"] {
        assert_eq!(w.delivered(n, SMTP)?, N, "{n} still dropped");
    }
    assert!(a.list_json()?.as_array().is_some_and(Vec::is_empty));
    // Gone from the store too: a restart restores nothing.
    let mut w = w;
    w.lab.agent.stop()?;
    w.restart()?;
    assert!(
        w.lab
            .agent
            .list_json()?
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}

#[test]
fn configuration_helpers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = fail2xdp_bin();
    // `config default` prints what check-config accepts.
    let o = Command::new(&bin).args(["config", "default"]).output()?;
    assert!(o.status.success());
    let default = dir.path().join("default.toml");
    std::fs::write(&default, &o.stdout)?;
    let o = Command::new(&bin)
        .arg("check-config")
        .arg(&default)
        .output()?;
    assert!(o.status.success(), "{}", out(&o));
    assert!(!out(&o).contains("without an increment"), "{}", out(&o));

    // A typo gets a hint; file:line:key first.
    let typo = dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"/var/log/mail.log\"]\nmaxrety = 3\n",
    )?;
    let o = Command::new(&bin).arg("check-config").arg(&typo).output()?;
    assert!(!o.status.success());
    let e = out(&o);
    assert!(e.contains("typo.toml:4"), "{e}");
    assert!(e.contains("did you mean `maxretry`?"), "{e}");

    // A custom configuration without [defaults.increment] is told it will not escalate.
    let flat = dir.path().join("flat.toml");
    std::fs::write(
        &flat,
        "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"/var/log/mail.log\"]\n",
    )?;
    let o = Command::new(&bin).arg("check-config").arg(&flat).output()?;
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("no [defaults.increment]") && out(&o).contains("never longer"),
        "{}",
        out(&o)
    );
    Ok(())
}

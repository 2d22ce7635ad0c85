//! `fail2xdp install-systemd [--] RUN-ARGS...`: the hardened unit of
//! contrib/systemd with this host's `run` arguments, and the binary where
//! the unit runs it from.
use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use fail2xdp::instance::{DEFAULT_NAME, Instance};

/// The unit as shipped: the template every install starts from.
pub const UNIT: &str = include_str!("../../../contrib/systemd/fail2xdp.service");

pub struct Install {
    /// The instance, and whether its paths were given explicitly.
    pub instance: Instance,
    pub explicit_paths: bool,
    /// `fail2xdp run`'s arguments, already checked by its parser.
    pub run_args: Vec<String>,
    /// Where the unit runs the binary from (this binary is copied there).
    pub bin: PathBuf,
    pub unit_dir: PathBuf,
    /// Print the unit, write nothing.
    pub print: bool,
}

/// The unit's name: `fail2xdp.service`, `fail2xdp-NAME.service` for
/// another instance.
pub fn unit_name(inst: &Instance) -> String {
    if inst.name == DEFAULT_NAME {
        "fail2xdp.service".into()
    } else {
        format!("fail2xdp-{}.service", inst.name)
    }
}

/// One word of a command line as systemd reads it: quoted when it must be,
/// `$` and `%` doubled so systemd expands nothing.
fn word(s: &str) -> String {
    let s = s.replace('%', "%%").replace('$', "$$");
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+[]".contains(&b))
    {
        return s;
    }
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// The unit for `i`.
pub fn render(i: &Install) -> String {
    let mut cmd = vec![i.bin.display().to_string()];
    if i.instance.name != DEFAULT_NAME {
        cmd.extend(["--instance".into(), i.instance.name.clone()]);
    }
    let mut rw = Vec::new();
    if i.explicit_paths {
        for (flag, p) in [
            ("--pin-dir", &i.instance.pin_dir),
            ("--state-dir", &i.instance.state_dir),
            ("--socket", &i.instance.socket),
        ] {
            cmd.extend([flag.to_string(), p.display().to_string()]);
        }
        rw.push(i.instance.state_dir.display().to_string());
        if let Some(d) = i.instance.socket.parent() {
            rw.push(d.display().to_string());
        }
    }
    cmd.push("run".into());
    cmd.extend(i.run_args.iter().cloned());
    let exec = cmd.iter().map(|w| word(w)).collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(UNIT.len() + 256);
    for line in UNIT.lines() {
        if line.starts_with("ExecStart=") {
            out.push_str(&format!("ExecStart={exec}\n"));
        } else if line.starts_with("StateDirectory=") && i.instance.name != DEFAULT_NAME {
            out.push_str(&format!("StateDirectory={}\n", i.instance.name));
        } else if line.starts_with("ReadWritePaths=") && !rw.is_empty() {
            out.push_str(&format!("{line} {}\n", rw.join(" ")));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// running binary or unit is replaced whole.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("a path with a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("new"),
        std::process::id()
    ));
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

pub fn run(i: Install) -> Result<ExitCode> {
    let unit = render(&i);
    if i.print {
        print!("{unit}");
        return Ok(ExitCode::SUCCESS);
    }
    if !i.bin.is_absolute() {
        bail!("--bin {}: the unit needs an absolute path", i.bin.display());
    }
    let me = std::env::current_exe().context("finding this binary")?;
    let same = fs::canonicalize(&i.bin).is_ok_and(|b| fs::canonicalize(&me).is_ok_and(|m| m == b));
    if !same {
        let bytes = fs::read(&me).with_context(|| format!("reading {}", me.display()))?;
        write_atomic(&i.bin, &bytes, 0o755)?;
        println!("installed {}", i.bin.display());
    }
    let name = unit_name(&i.instance);
    let path = i.unit_dir.join(&name);
    write_atomic(&path, unit.as_bytes(), 0o644)?;
    println!("wrote {}", path.display());
    let stem = name.trim_end_matches(".service");
    println!(
        "next: systemctl daemon-reload && systemctl enable --now {stem}\n\
         then: systemctl status {stem}; journalctl -u {stem}; `systemctl reload {stem}` re-reads the configuration"
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_systemd() {
        assert_eq!(word("--iface"), "--iface");
        assert_eq!(word("/etc/fail2xdp/a b.toml"), "\"/etc/fail2xdp/a b.toml\"");
        assert_eq!(word("50%"), "\"50%%\"");
        assert_eq!(word("$HOME"), "\"$$HOME\"");
        assert_eq!(word("a\"b"), "\"a\\\"b\"");
        assert_eq!(word(""), "\"\"");
    }

    #[test]
    fn the_unit_gets_this_hosts_arguments() {
        let i = Install {
            instance: Instance::named("mx2").unwrap(),
            explicit_paths: false,
            run_args: vec!["--iface".into(), "eth1".into()],
            bin: "/usr/local/bin/fail2xdp".into(),
            unit_dir: "/etc/systemd/system".into(),
            print: true,
        };
        let u = render(&i);
        assert!(
            u.contains("\nExecStart=/usr/local/bin/fail2xdp --instance mx2 run --iface eth1\n"),
            "{u}"
        );
        assert!(u.contains("\nStateDirectory=mx2\n"), "{u}");
        assert!(u.contains("\nType=notify\n"), "{u}");
        assert_eq!(unit_name(&i.instance), "fail2xdp-mx2.service");
    }
}

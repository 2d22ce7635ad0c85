//! Checks the build and test prerequisites and installs what is missing,
//! saying what it does, so a fresh machine (or CI) needs nothing by hand.
use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Enough to build the agent with its XDP object.
    Build,
    /// Build plus the tools tests and benchmarks run (peers, netns, journal).
    All,
}

/// Debian packages: (package, why).
const BUILD_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links against LLVM 22"),
    ("libpolly-22-dev", "bpf-linker links against LLVM 22"),
    ("libzstd-dev", "bpf-linker links against LLVM 22"),
    ("zlib1g-dev", "bpf-linker links against LLVM 22"),
    ("bpftool", "inspecting pinned maps"),
];
const TEST_PACKAGES: &[(&str, &str)] = &[
    (
        "iproute2",
        "network namespaces and veth pairs for the packet tests",
    ),
    (
        "xdp-tools",
        "xdp-filter, the data-plane benchmark peer and the dispatcher test",
    ),
    ("nftables", "nft, a peer of the packets benchmark"),
    ("ipset", "ipset, a peer of the packets benchmark"),
    ("iptables", "iptables, peers of the packets benchmark"),
    (
        "fail2ban",
        "fail2ban-regex (the ingest benchmark peer); its stock filter.d and jail files for the fail2ban tests",
    ),
    (
        "systemd-journal-remote",
        "writing journal files for the journal source tests",
    ),
    (
        "systemd",
        "journalctl, read by the journal source; systemd-analyze verify for the unit's test",
    ),
    ("tmux", "driving `fail2xdp top` in its terminal test"),
    (
        "util-linux",
        "setpriv: the agent run with only the systemd unit's capabilities",
    ),
    ("python3", "the log generator of the ingest benchmark"),
    ("postfix", "the real MX of the mx lab and benchmark"),
    (
        "dovecot-core",
        "SASL authentication (passwd-file) for the lab's Postfix",
    ),
    ("swaks", "SMTP AUTH attackers and the client of the mx lab"),
    ("libio-socket-inet6-perl", "swaks over IPv6"),
    (
        "nftables",
        "fail2ban's nftables action, the mx benchmark peer's firewall",
    ),
    (
        "python3-pyinotify",
        "fail2ban's pyinotify backend in the mx benchmark",
    ),
    ("openssl", "certificates for the CrowdSec TLS test"),
];

/// Answers a package would otherwise ask for on the terminal, given to
/// debconf before installing it: (package, debconf-set-selections line).
const PRESEED: &[(&str, &str)] = &[(
    "postfix",
    // Without an answer postfix's configuration dialog waits for a terminal;
    // "Local only" listens on loopback, the lab runs its own instances.
    "postfix postfix/main_mailer_type select Local only",
)];

pub fn ensure(need: Need) -> Result<()> {
    let mut pkgs: Vec<&str> = BUILD_PACKAGES.iter().map(|p| p.0).collect();
    if need == Need::All {
        pkgs.extend(TEST_PACKAGES.iter().map(|p| p.0));
    }
    apt_install_missing(&pkgs)?;
    if need == Need::All {
        crowdsec()?;
    }
    rust_src()?;
    bpf_linker()?;
    bpffs()?;
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_install_missing(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    preseed(&missing)?;
    check(
        Command::new("apt-get").arg("update").arg("-q"),
        "apt-get update",
    )?;
    check(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

fn preseed(missing: &[&str]) -> Result<()> {
    let answers: Vec<&str> = PRESEED
        .iter()
        .filter(|(pkg, _)| missing.contains(pkg))
        .map(|(_, line)| *line)
        .collect();
    if answers.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn()
        .context("starting debconf-set-selections")?;
    let mut stdin = child.stdin.take().context("debconf-set-selections stdin")?;
    for line in &answers {
        writeln!(stdin, "{line}").context("writing to debconf-set-selections")?;
    }
    drop(stdin);
    let status = child.wait().context("waiting for debconf-set-selections")?;
    if !status.success() {
        bail!("debconf-set-selections failed ({status})");
    }
    Ok(())
}

/// Where Debian's crowdsec looks for Central API credentials: with any
/// content there before it is installed, the package does not try to
/// register online (there is no internet here) and installs a working
/// Local API, which the CrowdSec tests run their own instances of.
const CROWDSEC_ONLINE_CREDENTIALS: &str = "/etc/crowdsec/online_api_credentials.yaml";

fn crowdsec() -> Result<()> {
    if installed("crowdsec") {
        return Ok(());
    }
    let path = Path::new(CROWDSEC_ONLINE_CREDENTIALS);
    let empty = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    if empty {
        eprintln!(
            "xtask: writing {CROWDSEC_ONLINE_CREDENTIALS} (no Central API: the tests are offline)"
        );
        std::fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec")?;
        std::fs::write(
            path,
            "# fail2xdp's tests: no Central API. Present before `apt-get install crowdsec`\n\
             # so that the package does not try to register online.\n",
        )
        .with_context(|| format!("writing {CROWDSEC_ONLINE_CREDENTIALS}"))?;
    }
    eprintln!("xtask: installing crowdsec (the Local API the CrowdSec tests run)");
    apt_install_missing(&["crowdsec"])
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup: is rustup installed?")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to the nightly toolchain (the eBPF build rebuilds core)");
    check(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        "rustup component add rust-src",
    )
}

fn bpf_linker() -> Result<()> {
    let ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker (built against LLVM 22; takes a minute)");
    check(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        "cargo install bpf-linker",
    )
}

/// cargo-fuzz, which builds and runs the fuzz targets (fuzz/).
pub fn cargo_fuzz() -> Result<()> {
    let ok = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (takes a minute)");
    check(
        Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
        "cargo install cargo-fuzz",
    )
}

/// The agent mounts bpffs itself too; tests and bpftool expect it present.
fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
    {
        return Ok(());
    }
    if !Path::new("/sys/fs/bpf").exists() {
        bail!("/sys/fs/bpf does not exist: this kernel has no bpffs mount point");
    }
    eprintln!("xtask: mounting bpffs at /sys/fs/bpf");
    check(
        Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]),
        "mount bpffs",
    )
}

pub fn check(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

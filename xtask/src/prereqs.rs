//! Checks the build and test prerequisites and installs what is missing,
//! saying what it does, so a fresh machine (or CI) needs nothing by hand.
use std::{
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
    ("xdp-tools", "xdp-filter, the data-plane benchmark peer"),
    (
        "fail2ban",
        "fail2ban-regex (the ingest benchmark peer); its stock filter.d and jail files for the fail2ban tests",
    ),
    (
        "systemd-journal-remote",
        "writing journal files for the journal source tests",
    ),
    ("systemd", "journalctl, read by the journal source"),
    ("python3", "the log generator of the ingest benchmark"),
];

pub fn ensure(need: Need) -> Result<()> {
    let mut pkgs: Vec<&str> = BUILD_PACKAGES.iter().map(|p| p.0).collect();
    if need == Need::All {
        pkgs.extend(TEST_PACKAGES.iter().map(|p| p.0));
    }
    apt_install_missing(&pkgs)?;
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

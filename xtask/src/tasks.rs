//! The build, run, test and bench commands.
use std::{
    path::PathBuf,
    process::{Command, ExitCode},
};

use anyhow::{Context, Result};

use crate::prereqs::{self, Need, check};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub fn build_ebpf() -> Result<()> {
    prereqs::ensure(Need::Build)?;
    let target_dir = root().join("target/ebpf");
    let mut c = Command::new("cargo");
    // Same command as watcher/build.rs: nightly, and none of our stable env.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO") || k.starts_with("RUST") {
            c.env_remove(&k);
        }
    }
    c.current_dir(root().join("ebpf"))
        .args(["+nightly", "build", "--release", "--target-dir"])
        .arg(&target_dir);
    check(&mut c, "building the eBPF program")?;
    eprintln!(
        "xtask: {}",
        target_dir
            .join("bpfel-unknown-none/release/fail2xdp")
            .display()
    );
    Ok(())
}

pub fn build_release() -> Result<()> {
    prereqs::ensure(Need::Build)?;
    check(
        cargo().args(["build", "--release", "-p", "fail2xdp"]),
        "cargo build --release",
    )?;
    eprintln!(
        "xtask: {}",
        root().join("target/release/fail2xdp").display()
    );
    Ok(())
}

const SUBCOMMANDS: &[&str] = &[
    "run",
    "ban",
    "unban",
    "list",
    "status",
    "explain",
    "reload",
    "allow",
    "detach",
    "check-config",
    "test",
    "help",
];

pub fn run(mut args: Vec<String>) -> Result<ExitCode> {
    build_release()?;
    // `cargo xtask run -- --iface eth0` means the agent itself.
    if args.first().is_none_or(|a| {
        !SUBCOMMANDS.contains(&a.as_str())
            && a.starts_with('-')
            && a != "--help"
            && a != "-h"
            && a != "--version"
    }) {
        args.insert(0, "run".into());
    }
    let status = Command::new(root().join("target/release/fail2xdp"))
        .args(&args)
        .status()
        .context("starting target/release/fail2xdp")?;
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

pub fn test(extra: Vec<String>) -> Result<ExitCode> {
    prereqs::ensure(Need::All)?;
    // The integration tests run the real binary; build it first.
    check(
        cargo().args(["build", "-p", "fail2xdp"]),
        "cargo build -p fail2xdp",
    )?;
    let status = cargo()
        .args(["test", "--workspace"])
        .args(&extra)
        .status()
        .context("starting cargo test")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Which benchmarks `cargo xtask bench` runs.
#[derive(Clone, Copy, Default)]
pub struct Benches {
    pub dataplane: bool,
    pub ingest: bool,
    pub packets: bool,
}

pub fn bench(b: Benches) -> Result<ExitCode> {
    let Benches {
        dataplane,
        ingest,
        packets,
    } = b;
    prereqs::ensure(Need::All)?;
    check(
        cargo().args(["build", "--release", "-p", "fail2xdp"]),
        "cargo build --release",
    )?;
    let mut ok = true;
    if packets {
        // `ban --file` load times are taken with the release binary.
        ok &= cargo()
            .args(["bench", "-p", "fail2xdp-tests", "--bench", "packets"])
            .env("FAIL2XDP_BIN", root().join("target/release/fail2xdp"))
            .status()
            .context("starting the packets bench")?
            .success();
    }
    if dataplane {
        ok &= cargo()
            .args(["bench", "-p", "fail2xdp-tests", "--bench", "dataplane"])
            .status()
            .context("starting the dataplane bench")?
            .success();
    }
    if ingest {
        ok &= cargo()
            .args(["bench", "-p", "fail2xdp", "--bench", "ingest"])
            .status()
            .context("starting the ingest bench")?
            .success();
        // Detection-to-drop needs real packets, so it lives with the netns tests.
        ok &= cargo()
            .args([
                "test",
                "--release",
                "-p",
                "fail2xdp-tests",
                "--test",
                "watcher_e2e",
                "--",
            ])
            .args([
                "--ignored",
                "--nocapture",
                "--exact",
                "detection_to_drop_latency",
            ])
            .env("FAIL2XDP_BIN", root().join("target/release/fail2xdp"))
            .status()
            .context("starting the detection-to-drop latency bench")?
            .success();
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

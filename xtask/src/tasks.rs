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

/// `cargo xtask run -- ARGS` is `fail2xdp run ARGS`: the agent (the other
/// commands are the binary's own: `target/release/fail2xdp --help`).
pub fn run(args: Vec<String>) -> Result<ExitCode> {
    build_release()?;
    let status = Command::new(root().join("target/release/fail2xdp"))
        .arg("run")
        .args(&args)
        .status()
        .context("starting target/release/fail2xdp")?;
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

/// `fail2xdp man --out DIR`: the pages come from the binary's own clap
/// definition, so they never disagree with `--help`.
pub fn man(out: Option<PathBuf>) -> Result<()> {
    prereqs::ensure(Need::Build)?;
    let out = out.unwrap_or_else(|| root().join("target/man"));
    check(
        cargo()
            .args(["run", "-q", "-p", "fail2xdp", "--", "man", "--out"])
            .arg(&out),
        "fail2xdp man",
    )?;
    eprintln!(
        "xtask: man pages in {} (man -l {}/fail2xdp.1)",
        out.display(),
        out.display()
    );
    Ok(())
}

pub fn test(extra: Vec<String>) -> Result<ExitCode> {
    prereqs::ensure(Need::All)?;
    // The integration tests run the real binary; build it first.
    check(
        cargo().args(["build", "-p", "fail2xdp"]),
        "cargo build -p fail2xdp",
    )?;
    let status = cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(&extra)
        .status()
        .context("starting cargo test")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The benchmarks `cargo xtask bench` runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    Dataplane,
    Ingest,
    Restore,
    Mx,
    Fleet,
    Packets,
}

pub fn bench(which: &[Bench]) -> Result<ExitCode> {
    let (dataplane, ingest, restore, mx) = (
        which.contains(&Bench::Dataplane),
        which.contains(&Bench::Ingest),
        which.contains(&Bench::Restore),
        which.contains(&Bench::Mx),
    );
    let fleet = which.contains(&Bench::Fleet);
    let packets = which.contains(&Bench::Packets);
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
    if restore {
        ok &= cargo()
            .args([
                "test",
                "--release",
                "-p",
                "fail2xdp-tests",
                "--test",
                "one_path",
                "--",
            ])
            .args([
                "--ignored",
                "--nocapture",
                "--exact",
                "million_bans_restore_within_five_seconds",
            ])
            .env("FAIL2XDP_BIN", root().join("target/release/fail2xdp"))
            .status()
            .context("starting the restore bench")?
            .success();
    }
    if mx {
        // The release agent beside real Postfix, Dovecot and fail2ban.
        ok &= cargo()
            .args(["bench", "-p", "fail2xdp-tests", "--bench", "mx"])
            .env("FAIL2XDP_BIN", root().join("target/release/fail2xdp"))
            .status()
            .context("starting the mx bench")?
            .success();
    }
    if fleet {
        ok &= cargo()
            .args([
                "test",
                "--release",
                "-p",
                "fail2xdp-tests",
                "--test",
                "crowdsec",
                "--",
            ])
            .args(["--ignored", "--nocapture", "--exact", "fleet_latency"])
            .env("FAIL2XDP_BIN", root().join("target/release/fail2xdp"))
            .status()
            .context("starting the fleet latency bench")?
            .success();
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

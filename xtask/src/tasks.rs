//! The build, run, test and bench commands.
use std::{
    path::PathBuf,
    process::{Command, ExitCode},
};

use anyhow::{Context, Result};

use crate::{
    prereqs::{self, Need, check},
    testlog,
};

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
    let tests = testlog::run(
        cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(&extra),
    )?;
    // Every fuzz target for a minute, unless a test filter picks tests.
    let fuzzed = if extra.iter().all(|a| a.starts_with('-')) {
        fuzz(
            "all",
            &FuzzRun {
                seconds: FUZZ_SECONDS_IN_TEST,
                jobs: 1,
                seed: Some(FUZZ_SEED_IN_TEST),
                fresh: true,
            },
        )? == ExitCode::SUCCESS
    } else {
        true
    };
    // Last, so CI's tail shows what failed, whatever printed after it.
    tests.repeat_failures();
    Ok(if tests.success && fuzzed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How long `cargo xtask test` runs each fuzz target.
const FUZZ_SECONDS_IN_TEST: u64 = 60;
/// The seed of `cargo xtask test`'s fuzzing. With a fixed seed and a fresh
/// corpus the minute a target gets in CI is the minute it gets here (as
/// far as the machine's speed goes), so a CI failure reproduces with
/// `cargo xtask fuzz TARGET --seed 1`; hours of fresh seeds are `cargo
/// xtask fuzz`'s job.
const FUZZ_SEED_IN_TEST: u32 = 1;

/// How the targets are built: optimized, with debug assertions and
/// overflow checks on. No sanitizer: what they run is safe Rust, whose
/// bounds and overflow checks are what AddressSanitizer would add, and the one unsafe part, the frames
/// target's maps, is kernel memory it cannot see. Without it the slow
/// targets run several times as many inputs per CPU-second.
const FUZZ_BUILD: [&str; 3] = ["--debug-assertions", "--sanitizer", "none"];

/// How to fuzz.
pub struct FuzzRun {
    /// Per target.
    pub seconds: u64,
    pub jobs: u32,
    pub seed: Option<u32>,
    /// Start from the corpus in the tree alone (what a fresh clone has),
    /// not from what earlier runs found.
    pub fresh: bool,
}

/// The nightly cargo, without the stable toolchain's environment.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO") || k.starts_with("RUSTUP") || k == "RUSTFLAGS" {
            c.env_remove(&k);
        }
    }
    c.current_dir(root()).arg("+nightly");
    c
}

fn fuzz_targets() -> Result<Vec<String>> {
    let out = nightly_cargo()
        .args(["fuzz", "list"])
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        anyhow::bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Fuzzes `target` (or every target, `all`) for `seconds` each, seeded with
/// the corpus in the tree (fuzz/corpus/TARGET, read only); what libFuzzer
/// finds goes to target/fuzz/corpus/TARGET, crashes to
/// target/fuzz/artifacts/TARGET.
pub fn fuzz(target: &str, run: &FuzzRun) -> Result<ExitCode> {
    let seconds = run.seconds;
    prereqs::ensure(Need::All)?;
    prereqs::cargo_fuzz()?;
    let all = fuzz_targets()?;
    let targets: Vec<String> = if target == "all" {
        all
    } else if all.iter().any(|t| t == target) {
        vec![target.to_string()]
    } else {
        anyhow::bail!("no fuzz target {target} (targets: {})", all.join(", "));
    };
    let work = root().join("target/fuzz");
    // Built once up front, so each target's CPU time is its fuzzing alone.
    let st = nightly_cargo()
        .args(["fuzz", "build"])
        .args(FUZZ_BUILD)
        .arg("--target-dir")
        .arg(work.join("build"))
        .status()
        .context("starting cargo fuzz build")?;
    if !st.success() {
        anyhow::bail!("cargo fuzz build failed");
    }
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for t in &targets {
        let corpus = work
            .join(if run.fresh { "fresh-corpus" } else { "corpus" })
            .join(t);
        if run.fresh && corpus.exists() {
            std::fs::remove_dir_all(&corpus)
                .with_context(|| format!("emptying {}", corpus.display()))?;
        }
        let artifacts = work.join("artifacts").join(t);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        eprintln!("xtask: fuzzing {t} for {seconds} s");
        let t0 = std::time::Instant::now();
        let cpu0 = children_cpu_seconds();
        let mut c = nightly_cargo();
        c.args(["fuzz", "run"])
            .args(FUZZ_BUILD)
            .arg("--target-dir")
            .arg(work.join("build"))
            .arg(t)
            .arg(&corpus)
            .arg(root().join("fuzz/corpus").join(t))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            // A slow input is a finding too: no line may take seconds.
            .arg("-timeout=10")
            .arg("-rss_limit_mb=4096")
            .arg("-max_len=65536")
            .arg("-print_final_stats=1");
        if run.jobs > 1 {
            c.arg(format!("-fork={}", run.jobs));
        }
        if let Some(seed) = run.seed {
            c.arg(format!("-seed={seed}"));
        }
        let st = c.status().context("starting cargo fuzz run")?;
        let cpu = children_cpu_seconds() - cpu0;
        let verdict = if st.success() { "no crash" } else { "FAILED" };
        eprintln!(
            "xtask: {t}: {verdict} after {:.0} s ({cpu:.0} CPU-s)",
            t0.elapsed().as_secs_f64()
        );
        summary.push(format!(
            "| {t} | {:.0} | {cpu:.0} | {verdict} |",
            t0.elapsed().as_secs_f64()
        ));
        if !st.success() {
            failed.push(t.clone());
        }
    }
    eprintln!("\n| target | wall s | CPU s | result |\n|---|---:|---:|---|");
    for row in &summary {
        eprintln!("{row}");
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "xtask: fuzz targets failed: {} (inputs in target/fuzz/artifacts/)",
        failed.join(", ")
    );
    Ok(ExitCode::FAILURE)
}

/// User + system CPU seconds of this process's waited-for children
/// (fields 16 and 17 of /proc/self/stat, in clock ticks of 1/100 s).
fn children_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name may hold spaces: fields count from after its ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After ')': field 3 (state) is index 0, so field n is index n - 3.
    (tick(16 - 3) + tick(17 - 3)) / 100.0
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
    Spray,
}

/// A `cargo bench` target of `package`, with the release agent.
fn run_bench(package: &str, name: &str) -> Result<bool> {
    Ok(cargo()
        .args(["bench", "-p", package, "--bench", name])
        .env("FAIL2XDP_BIN", root().join("target/release/fail2xdp"))
        .status()
        .with_context(|| format!("starting the {name} bench"))?
        .success())
}

/// A measurement kept as an ignored test of the netns suite (it needs the
/// harness's namespaces and agents), run by its exact name, release build.
fn run_ignored_test(test: &str, name: &str) -> Result<bool> {
    Ok(cargo()
        .args([
            "test",
            "--release",
            "-p",
            "fail2xdp-tests",
            "--test",
            test,
            "--",
        ])
        .args(["--ignored", "--nocapture", "--exact", name])
        .env("FAIL2XDP_BIN", root().join("target/release/fail2xdp"))
        .status()
        .with_context(|| format!("starting {name}"))?
        .success())
}

pub fn bench(which: &[Bench]) -> Result<ExitCode> {
    prereqs::ensure(Need::All)?;
    check(
        cargo().args(["build", "--release", "-p", "fail2xdp"]),
        "cargo build --release",
    )?;
    let mut ok = true;
    for b in which {
        ok &= match b {
            // `ban --file` load times are taken with the release binary.
            Bench::Packets => run_bench("fail2xdp-tests", "packets")?,
            Bench::Dataplane => run_bench("fail2xdp-tests", "dataplane")?,
            Bench::Ingest => {
                // Detection-to-drop needs real packets, so it lives with the netns tests.
                run_bench("fail2xdp", "ingest")?
                    & run_ignored_test("watcher_e2e", "detection_to_drop_latency")?
            }
            Bench::Restore => {
                run_ignored_test("one_path", "million_bans_restore_within_five_seconds")?
            }
            // F2X_SPRAY_LINES / F2X_SPRAY_MAX_HOSTS, when set, pass through.
            Bench::Spray => run_ignored_test("spray", "sprays_stay_bounded")?,
            // The release agent beside real Postfix, Dovecot and fail2ban.
            Bench::Mx => run_bench("fail2xdp-tests", "mx")?,
            Bench::Fleet => run_ignored_test("crowdsec", "fleet_latency")?,
        };
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

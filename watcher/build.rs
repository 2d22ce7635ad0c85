//! Builds the XDP program (ebpf/) with the nightly toolchain and leaves the
//! object in OUT_DIR, so `include_bytes!` embeds it and one `fail2xdp` binary
//! carries its data plane. `FAIL2XDP_EBPF_OBJ=path` skips the build (packagers).
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let out = PathBuf::from(env::var("OUT_DIR")?).join("fail2xdp.bpf.o");
    println!("cargo:rerun-if-env-changed=FAIL2XDP_EBPF_OBJ");
    if let Ok(obj) = env::var("FAIL2XDP_EBPF_OBJ") {
        fs::copy(&obj, &out).with_context(|| format!("copying {obj}"))?;
        return Ok(());
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("..");
    let ebpf = root.join("ebpf");
    for p in ["src", "Cargo.toml", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", ebpf.join(p).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("common/src").display()
    );

    // The outer cargo's toolchain and flags must not leak into the nightly build.
    let mut cmd = Command::new("cargo");
    for (k, _) in env::vars() {
        if k.starts_with("CARGO") || k.starts_with("RUST") {
            cmd.env_remove(&k);
        }
    }
    let target_dir = root.join("target/ebpf");
    cmd.current_dir(&ebpf)
        .args(["+nightly", "build", "--release", "--target-dir"])
        .arg(&target_dir);
    let status = cmd.status().context(
        "running cargo +nightly for the eBPF program (run `cargo xtask build-ebpf` to install prerequisites)",
    )?;
    if !status.success() {
        bail!(
            "building the eBPF program failed: run `cargo xtask build-ebpf` to install prerequisites"
        );
    }
    let obj = target_dir.join("bpfel-unknown-none/release/fail2xdp");
    fs::copy(&obj, &out).with_context(|| format!("copying {}", obj.display()))?;
    Ok(())
}

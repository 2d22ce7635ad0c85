//! xdp-filter (xdp-tools) on an interface of a test namespace, as a peer
//! to measure against and as the other program in libxdp's dispatcher.
//!
//! xdp-filter keeps its state at fixed places (`/sys/fs/bpf/xdp-filter`,
//! libxdp's `/sys/fs/bpf/xdp`, a lock file in `/run`), which parallel test
//! runs would share. So each [`XdpFilter`] mounts a bpffs instance of its
//! own (under /sys/fs/bpf, uniquely named) and runs every xdp-filter
//! command in a private mount namespace where that instance is
//! /sys/fs/bpf and /run is a private tmpfs. fail2xdp finds the same
//! dispatcher pins through `LIBXDP_BPFFS` = [`XdpFilter::bpffs`].

use std::{
    ffi::CString,
    fs,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use aya::maps::MapData;

use crate::netns::unique_name;

pub struct XdpFilter {
    bpffs: PathBuf,
    netns: PathBuf,
    iface: String,
    lean: bool,
    loaded: bool,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).context("NUL in a path")
}

impl XdpFilter {
    /// Loads xdp-filter on `iface` in the namespace bound at `netns`, in
    /// native mode behind libxdp's dispatcher (`lean`: only the address
    /// features, attached directly, its cheapest form). `policy` is
    /// "allow" (pass what no rule names) or "deny".
    pub fn load(netns: &Path, iface: &str, lean: bool, policy: &str) -> Result<Self> {
        if crate::preflight::which("xdp-filter").is_none() {
            bail!("xdp-filter (xdp-tools) is not installed: `cargo xtask prereqs` installs it");
        }
        let bpffs = PathBuf::from("/sys/fs/bpf").join(unique_name("f2x-test"));
        fs::create_dir(&bpffs).with_context(|| format!("creating {}", bpffs.display()))?;
        let (src, ty) = (c"bpf", c"bpf");
        let dst = cstr(&bpffs)?;
        // SAFETY: NUL-terminated strings, no data argument.
        if unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) } != 0
        {
            let e = std::io::Error::last_os_error();
            let _ = fs::remove_dir(&bpffs);
            return Err(e).with_context(|| format!("mounting a bpffs at {}", bpffs.display()));
        }
        let mut me = XdpFilter {
            bpffs,
            netns: netns.to_path_buf(),
            iface: iface.to_string(),
            lean,
            loaded: false,
        };
        let mut args = vec!["load", "--mode", "native", "--policy", policy];
        if lean {
            args.extend(["--features", "ipv4,ipv6"]);
        }
        args.push(iface);
        me.run(&args)?;
        me.loaded = true;
        Ok(me)
    }

    /// The bpffs instance xdp-filter and libxdp keep their pins in: what
    /// `LIBXDP_BPFFS` must be for fail2xdp to join its dispatcher.
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// Runs `xdp-filter args...` in its namespaces; returns stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let ns = fs::File::open(&self.netns)
            .with_context(|| format!("opening {}", self.netns.display()))?;
        let bpffs = cstr(&self.bpffs)?;
        let mut cmd = Command::new("xdp-filter");
        cmd.args(args);
        if self.lean {
            cmd.env("LIBXDP_SKIP_DISPATCHER", "1");
        }
        // SAFETY: the closure makes only async-signal-safe system calls
        // (setns, unshare, mount) on memory prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return fail();
                }
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return fail();
                }
                let none = std::ptr::null::<libc::c_char>();
                if libc::mount(
                    none,
                    c"/".as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return fail();
                }
                if libc::mount(
                    bpffs.as_ptr(),
                    c"/sys/fs/bpf".as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return fail();
                }
                if libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/run".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ) != 0
                {
                    return fail();
                }
                Ok(())
            });
        }
        let out = cmd.output().context("running xdp-filter")?;
        if !out.status.success() {
            bail!(
                "xdp-filter {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One of xdp-filter's pinned maps (`filter_ipv4`, `xdp_stats_map`, ...).
    pub fn map(&self, name: &str) -> Result<MapData> {
        let path = self.bpffs.join("xdp-filter").join(name);
        MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))
    }

    /// `xdp-filter ip ADDR --mode src`: a rule on the source address.
    pub fn add_src(&self, addr: &str) -> Result<()> {
        self.run(&["ip", addr, "--mode", "src"]).map(drop)
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        if self.loaded
            && let Err(e) = self.run(&["unload", &self.iface.clone()])
        {
            eprintln!("warning: xdp-filter unload: {e:#}");
        }
        match cstr(&self.bpffs) {
            Ok(p) => {
                // SAFETY: a NUL-terminated path; detaching is fine while
                // pins in it are still referenced elsewhere.
                unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
            }
            Err(e) => eprintln!("warning: {e:#}"),
        }
        let _ = fs::remove_dir(&self.bpffs);
    }
}

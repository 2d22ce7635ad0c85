//! Named network namespaces joined by a veth pair, removed on Drop.
//!
//! Namespaces are entered with setns(2) on a dedicated thread or in a child
//! before exec, never with `ip netns exec`: that remounts /sys in a private
//! mount namespace, which hides the bpffs pins the agent and CLI share.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};

use crate::{
    packet::Probe,
    traffic::{MARKER_PORT, Receiver, Sender},
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `prefix-<pid>-<n>`: unique among concurrent tests and test processes.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // F2X_NAME_TAG marks one checkout's namespaces and pins apart from
    // others' on a shared machine.
    let tag = std::env::var("F2X_NAME_TAG").unwrap_or_default();
    format!("{prefix}{tag}-{}-{n}", std::process::id())
}

/// A named network namespace (`ip netns add`), deleted on Drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Self> {
        run_ip(&["netns", "add", name])?;
        Ok(Self {
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, as `nsenter --net=` takes it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Runs `f` on a fresh thread that has joined this namespace; sockets it
    /// opens stay in the namespace and may be used from any thread afterwards.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T> {
        let ns = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                // SAFETY: ns is an open namespace file; setns only affects this thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error()).context("setns(CLONE_NEWNET)");
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread inside netns panicked"))?
        })
    }

    /// A command whose process runs in this namespace (network only; the
    /// mount namespace, hence /sys/fs/bpf, stays the caller's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        command_in(&self.path(), program)
    }

    /// `ip -n <ns> args...`, returning stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_ip(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("warning: cleaning up netns {}: {e:#}", self.name);
        }
    }
}

/// A command that runs in the network namespace bound at `ns_path`.
pub(crate) fn command_in(ns_path: &Path, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
    let ns = File::open(ns_path).with_context(|| format!("opening {}", ns_path.display()))?;
    let mut cmd = Command::new(program);
    // SAFETY: the closure only calls setns, which is async-signal-safe; the
    // file is O_CLOEXEC, so the program itself does not inherit it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

fn run_ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two namespaces joined by one veth pair: frames sent on `send_if` arrive on
/// `recv_if`, where the agent attaches its XDP program (native mode: XDP on a
/// veth runs in the peer's transmit path through the receiving veth's NAPI,
/// which attaching the program enables).
#[derive(Debug)]
pub struct NetnsPair {
    pub send_ns: Netns,
    pub recv_ns: Netns,
    pub send_if: String,
    pub recv_if: String,
}

impl NetnsPair {
    pub const SEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    pub const RECV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    pub const SEND_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    pub const RECV_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    pub const SEND_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    pub const RECV_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    pub fn new() -> Result<Self> {
        crate::stale::clean_stale_once();
        let base = unique_name("f2x");
        let send_ns = Netns::create(&format!("{base}-s"))?;
        let recv_ns = Netns::create(&format!("{base}-r"))?;
        // Interface names must fit IFNAMSIZ (15); unique host-wide so that
        // `bpftool net` output and link pin names never collide.
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{n:x}", std::process::id());
        let send_if = format!("xs{id}");
        let recv_if = format!("xr{id}");
        if recv_if.len() > 15 {
            bail!("interface name {recv_if} too long");
        }
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        run_ip(&[
            "link",
            "add",
            &send_if,
            "netns",
            send_ns.name(),
            "address",
            &mac(Self::SEND_MAC),
            "type",
            "veth",
            "peer",
            "name",
            &recv_if,
            "netns",
            recv_ns.name(),
            "address",
            &mac(Self::RECV_MAC),
        ])?;
        for (ns, ifname, v4, v6) in [
            (&send_ns, &send_if, Self::SEND_V4, Self::SEND_V6),
            (&recv_ns, &recv_if, Self::RECV_V4, Self::RECV_V6),
        ] {
            ns.ip(&["link", "set", "lo", "up"])?;
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(Self {
            send_ns,
            recv_ns,
            send_if,
            recv_if,
        })
    }

    /// AF_PACKET sender on the sending veth.
    pub fn sender(&self) -> Result<Sender> {
        Sender::open(&self.send_ns, &self.send_if)
    }

    /// Frame counter on the receiving veth (sees only what XDP passed).
    pub fn receiver(&self) -> Result<Receiver> {
        Receiver::open(&self.recv_ns, &self.recv_if)
    }

    /// A TCP SYN from `src` to the receiving side's address of the same family.
    pub fn syn(&self, src: IpAddr, dport: u16) -> Probe {
        let dst = match src {
            IpAddr::V4(_) => IpAddr::V4(Self::RECV_V4),
            IpAddr::V6(_) => IpAddr::V6(Self::RECV_V6),
        };
        Probe::syn(src, dst, dport).macs(Self::SEND_MAC, Self::RECV_MAC)
    }

    /// A UDP datagram from `src` to the receiving side's address of the same family.
    pub fn udp(&self, src: IpAddr, dport: u16) -> Probe {
        let syn = self.syn(src, dport);
        Probe::udp(syn.src, syn.dst, dport).macs(Self::SEND_MAC, Self::RECV_MAC)
    }

    /// The [`Receiver::settle`] marker: from the link's own address to the
    /// discard port. Tests never ban [`Self::SEND_V4`].
    pub fn marker() -> Probe {
        let mut m = Probe::syn(
            IpAddr::V4(Self::SEND_V4),
            IpAddr::V4(Self::RECV_V4),
            MARKER_PORT,
        )
        .macs(Self::SEND_MAC, Self::RECV_MAC);
        m.sport = 9;
        m
    }

    /// The XDP programs attached to the receiving veth, one entry per mode,
    /// e.g. `["native id 42"]` (modes: native, generic, offload).
    pub fn recv_xdp(&self) -> Result<Vec<String>> {
        let out = self
            .recv_ns
            .ip(&["-j", "link", "show", "dev", &self.recv_if])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("`ip -j link` printed {out}"))?;
        Ok(xdp_attachments(&v[0]))
    }
}

/// Reads `ip -j link`'s "xdp" object: "attached" lists every mode when
/// several are in use, otherwise the object itself is the one attachment.
fn xdp_attachments(link: &serde_json::Value) -> Vec<String> {
    let Some(xdp) = link.get("xdp") else {
        return Vec::new();
    };
    let one = [xdp.clone()];
    let all = xdp
        .get("attached")
        .and_then(|a| a.as_array())
        .map_or(&one[..], Vec::as_slice);
    all.iter()
        .filter_map(|a| {
            let mode = match a.get("mode")?.as_u64()? {
                1 => "native",
                2 => "generic",
                3 => "offload",
                _ => "unknown",
            };
            Some(format!("{mode} id {}", a.get("prog")?.get("id")?.as_u64()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_xdp_attachments() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"ifname":"xr1","xdp":{"mode":2,"prog":{"id":7,"name":"fail2xdp"},
               "attached":[{"mode":2,"prog":{"id":7,"name":"fail2xdp"}}]}}"#,
        )
        .unwrap();
        assert_eq!(xdp_attachments(&v), vec!["generic id 7"]);
        let v: serde_json::Value =
            serde_json::from_str(r#"{"xdp":{"mode":1,"prog":{"id":42}}}"#).unwrap();
        assert_eq!(xdp_attachments(&v), vec!["native id 42"]);
        let v: serde_json::Value =
            serde_json::from_str(r#"{"xdp":{"mode":4,"attached":[{"mode":1,"prog":{"id":1}},{"mode":2,"prog":{"id":2}}]}}"#)
                .unwrap();
        assert_eq!(xdp_attachments(&v), vec!["native id 1", "generic id 2"]);
        assert!(xdp_attachments(&serde_json::json!({"ifname": "xr1"})).is_empty());
    }
}

//! The lab's network: `mx`, `attackers` and `client` namespaces, each joined
//! by a veth to a `hub` namespace that routes between them. The agent's XDP
//! program sits on mx's veth, so everything that reaches Postfix crosses it.
//!
//! ```text
//!   attackers 203.0.113.0/24, 2001:db8:a:N::/64 ─┐
//!                                                hub ── mx 192.0.2.25, 2001:db8:25::25
//!   client    198.51.100.10, 2001:db8:c::10 ─────┘
//! ```
//!
//! No namespace has a default route: whatever a daemon tries beyond the lab
//! (DNS, say) fails inside it instead of leaving.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
};

use anyhow::{Context, Result, bail};

use crate::netns::{Netns, unique_name};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The four namespaces and the interface names the tests need.
#[derive(Debug)]
pub struct MxNet {
    /// Where Postfix, Dovecot and the protecting daemon run.
    pub mx: Netns,
    pub attackers: Netns,
    pub client: Netns,
    /// mx's end of its veth to the hub: the agent attaches here.
    pub mx_if: String,
    atk_if: String,
    hub: Netns,
}

impl MxNet {
    pub const MX_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
    pub const MX_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 0x25);
    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x10);

    /// The `n`-th IPv4 attacker, 203.0.113.(10 + n).
    pub fn attacker_v4(n: u8) -> IpAddr {
        assert!(n < 240, "attacker {n}: 203.0.113.0/24 is full");
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10 + n))
    }

    /// Host `host` of the `n`-th IPv6 attacker's own /64, 2001:db8:a:n::host.
    pub fn attacker_v6(n: u16, host: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xa, n, 0, 0, 0, host))
    }

    /// Mx's address of the same family as `peer`.
    pub fn mx_addr(peer: IpAddr) -> IpAddr {
        match peer {
            IpAddr::V4(_) => IpAddr::V4(Self::MX_V4),
            IpAddr::V6(_) => IpAddr::V6(Self::MX_V6),
        }
    }

    pub fn new() -> Result<Self> {
        crate::stale::clean_stale_once();
        let base = unique_name("f2x");
        let hub = Netns::create(&format!("{base}-hub"))?;
        let mx = Netns::create(&format!("{base}-mx"))?;
        let attackers = Netns::create(&format!("{base}-atk"))?;
        let client = Netns::create(&format!("{base}-cli"))?;
        // Unique host-wide (IFNAMSIZ 15), like the pair's: XDP listings and
        // link pins never collide between concurrent labs.
        let id = format!(
            "{:x}{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let net = Self {
            mx_if: format!("xm{id}"),
            atk_if: format!("xa{id}"),
            mx,
            attackers,
            client,
            hub,
        };
        if net.mx_if.len() > 15 {
            bail!("interface name {} too long", net.mx_if);
        }
        for ns in [&net.hub, &net.mx, &net.attackers, &net.client] {
            ns.ip(&["link", "set", "lo", "up"])?;
        }
        let client_if = format!("xc{id}");
        // (namespace, its interface, the hub's, IPv4 /24, IPv6 /64, host part)
        for (ns, ifname, hub_if, v4, v6, host) in [
            (
                &net.mx,
                &net.mx_if,
                format!("xh{id}"),
                "192.0.2",
                "2001:db8:25::",
                "25",
            ),
            (
                &net.attackers,
                &net.atk_if,
                format!("xb{id}"),
                "203.0.113",
                "2001:db8:ff::",
                "2",
            ),
            (
                &net.client,
                &client_if,
                format!("xd{id}"),
                "198.51.100",
                "2001:db8:c::",
                "10",
            ),
        ] {
            net.hub.ip(&[
                "link",
                "add",
                &hub_if,
                "type",
                "veth",
                "peer",
                "name",
                ifname,
                "netns",
                ns.name(),
            ])?;
            net.hub
                .ip(&["addr", "add", &format!("{v4}.1/24"), "dev", &hub_if])?;
            net.hub
                .ip(&["addr", "add", &format!("{v6}1/64"), "dev", &hub_if, "nodad"])?;
            net.hub.ip(&["link", "set", &hub_if, "up"])?;
            ns.ip(&["addr", "add", &format!("{v4}.{host}/24"), "dev", ifname])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{v6}{host}/64"),
                "dev",
                ifname,
                "nodad",
            ])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        // Each side reaches the others through the hub, and nothing else.
        for dst in ["203.0.113.0/24", "198.51.100.0/24"] {
            net.mx.ip(&["route", "add", dst, "via", "192.0.2.1"])?;
        }
        for dst in ["2001:db8:a::/48", "2001:db8:c::/64"] {
            net.mx
                .ip(&["-6", "route", "add", dst, "via", "2001:db8:25::1"])?;
        }
        net.attackers
            .ip(&["route", "add", "192.0.2.0/24", "via", "203.0.113.1"])?;
        net.attackers.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:25::/64",
            "via",
            "2001:db8:ff::1",
        ])?;
        net.client
            .ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.1"])?;
        net.client.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:25::/64",
            "via",
            "2001:db8:c::1",
        ])?;
        net.hub.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:a::/48",
            "via",
            "2001:db8:ff::2",
        ])?;
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            sysctl(&net.hub, key)?;
        }
        Ok(net)
    }

    /// The namespaces' names (`ip netns list`).
    pub fn names(&self) -> Vec<String> {
        [&self.hub, &self.mx, &self.attackers, &self.client]
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    }

    /// Gives the attackers' namespace another source address (IPv4 in
    /// 203.0.113.0/24, IPv6 in 2001:db8:a::/48).
    pub fn add_attacker(&self, addr: IpAddr) -> Result<()> {
        match addr {
            IpAddr::V4(a) => {
                if a.octets()[..3] != [203, 0, 113] || a.octets()[3] < 10 {
                    bail!("attacker {a} outside 203.0.113.10-255");
                }
                self.attackers
                    .ip(&["addr", "add", &format!("{a}/32"), "dev", &self.atk_if])?;
            }
            IpAddr::V6(a) => {
                if a.segments()[..3] != [0x2001, 0xdb8, 0xa] {
                    bail!("attacker {a} outside 2001:db8:a::/48");
                }
                self.attackers.ip(&[
                    "addr",
                    "add",
                    &format!("{a}/128"),
                    "dev",
                    &self.atk_if,
                    "nodad",
                ])?;
            }
        }
        Ok(())
    }
}

/// Sets a sysctl of `ns` (net.* keys are per namespace; `ip netns exec`'s
/// private /sys does not matter to sysctl).
fn sysctl(ns: &Netns, key: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "sysctl", "-q", "-w", key])
        .output()
        .context("running sysctl")?;
    if !out.status.success() {
        bail!(
            "sysctl {key} in {}: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a new thread that has joined `ns`: everything it connects
/// comes from that namespace. Unlike [`Netns::run`] it does not wait.
pub fn spawn_in<T, F>(ns: &Netns, name: &str, f: F) -> Result<JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let file = File::open(ns.path()).with_context(|| format!("opening {}", ns.path().display()))?;
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            // SAFETY: file is an open namespace file; setns only affects this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("setns(CLONE_NEWNET)");
            }
            drop(file);
            f()
        })
        .with_context(|| format!("spawning thread {name}"))
}

/// Joins a thread from [`spawn_in`], turning its panic into an error.
pub fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    let name = h.thread().name().unwrap_or("?").to_string();
    match h.join() {
        Ok(r) => r.with_context(|| format!("thread {name}")),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            bail!("thread {name} panicked: {msg}")
        }
    }
}

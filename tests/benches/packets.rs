//! Packets per second dropped under a flood of banned sources, live: every
//! frame comes from another address of the banned set, so every lookup
//! lands on another part of the table, as under a real flood.
//!
//! A sender namespace and one receiver namespace per setup, joined by veth
//! pairs the bench makes. The sender hands frames to the receiver the way a
//! NIC driver does (no skb): BPF_PROG_TEST_RUN with live frames runs a
//! small program (ours, in tests/src/bpf.rs) that writes the next source
//! address of its list into a prepared 64-byte TCP SYN to port 25 and
//! redirects it out of the sender's veth, in chunks of about a second. The
//! receiver's XDP or netfilter setup then judges it. Sender and receiver
//! share one CPU (the receiver's NAPI runs after each batch the sender
//! flushes), so a setup's rate reflects both; ratios within a round compare
//! setups under the same sender.
//!
//! Setups: no filter (frames climb the stack), nftables `netdev` ingress
//! drop with a set, iptables raw PREROUTING with an ipset `hash:ip`,
//! iptables with one rule per address (fail2ban's default action, 1,000
//! addresses), xdp-filter in native mode (10,000 at most), a trivial
//! counting XDP_DROP program (the floor) and fail2xdp. Each setup runs
//! F2X_PACKETS_SECONDS (default 4) per round, setups alternate over
//! F2X_PACKETS_ROUNDS (default 5) rounds; the tables give medians of each
//! setup's packets/s dropped (its own counters) and of its ratio to
//! fail2xdp in the same round.
//!
//! Netfilter setups need veth NAPI without an XDP program on the receiver;
//! a counting XDP_PASS program stands in front of them (the same few ns
//! for each; it is also what counts "no filter").
//!
//! IPv4 banned sets come from 240.0.0.0/4 (reserved, never routed: only
//! ever inside these namespaces), clean sources and every IPv6 address from
//! the documentation ranges. Run as root: `cargo xtask bench packets`.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
use fail2xdp::enforcer::{BanRequest, Capacities, IpNet, PortSet, WriteMode, XdpMode};
use fail2xdp_common::Stats;
use fail2xdp_tests::{
    Instance, Netns, Probe, XdpFilter,
    bpf::{self, ArrayMem},
    thousands, unique_name,
};

const RECV_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const RECV_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const SEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const RECV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// The i-th address of an IPv4 banned set (0-based): 240.0.0.1 onwards.
fn banned_v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xf000_0001u32 + i)
}

/// Clean IPv4 sources for the mixed stream: 203.0.113.0/24.
fn clean_v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, (i % 250) as u8 + 1)
}

/// The i-th address of the IPv6 /128 set: 2001:db8:1::/48 onwards.
fn banned_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (i >> 16) as u16, i as u16)
}

/// The i-th /64 of the IPv6 prefix set, and a source inside it.
fn banned_p6(i: u32) -> (Ipv6Addr, Ipv6Addr) {
    let net = Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x100 + (i >> 16) as u16,
        i as u16,
        0,
        0,
        0,
        0,
    );
    let src = Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x100 + (i >> 16) as u16,
        i as u16,
        0,
        0,
        0,
        0x77,
    );
    (net, src)
}

/// What a sender sends: the frame template and its list of sources.
struct Stream {
    v6: bool,
    frame: Vec<u8>,
    sources: Vec<IpAddr>,
    /// Sources that are not banned (the mixed stream).
    clean: usize,
}

impl Stream {
    fn new(sources: Vec<IpAddr>, clean: usize) -> Self {
        let v6 = sources.first().is_some_and(IpAddr::is_ipv6);
        let (src, dst) = if v6 {
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), IpAddr::V6(RECV_V6))
        } else {
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V4(RECV_V4))
        };
        let frame = Probe::syn(src, dst, 25)
            .macs(SEND_MAC, RECV_MAC)
            .min_len(64)
            .frame();
        Stream {
            v6,
            frame,
            sources,
            clean,
        }
    }

    /// The list map entries: IPv4 address and the IP header checksum the
    /// template has with it; IPv6 address.
    fn entries(&self) -> Result<ArrayMem> {
        let mut m = ArrayMem::new(if self.v6 { 16 } else { 8 }, self.sources.len() as u32)?;
        for (i, a) in self.sources.iter().enumerate() {
            match a {
                IpAddr::V4(a) => {
                    let mut h = self.frame[14..34].to_vec();
                    h[12..16].copy_from_slice(&a.octets());
                    h[10..12].fill(0);
                    let c = ip_checksum(&h);
                    let mut e = [0u8; 8];
                    e[..4].copy_from_slice(&a.octets());
                    e[4..6].copy_from_slice(&c.to_be_bytes());
                    m.set(i as u32, &e);
                }
                IpAddr::V6(a) => m.set(i as u32, &a.octets()),
            }
        }
        Ok(m)
    }
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A sender for one setup: its program (with the target ifindex and list
/// built in), list and cursor.
struct Sender {
    prog: OwnedFd,
    _list: ArrayMem,
    _cursor: OwnedFd,
    frame: Vec<u8>,
    /// Frames per chunk of about a second (calibrated as it runs).
    chunk: u32,
    /// Chunks keep whole passes over the list (the mixed stream's count).
    multiple: u32,
}

impl Sender {
    fn new(stream: &Stream, ifindex: u32) -> Result<Self> {
        let list = stream.entries()?;
        let cursor = bpf::map_create(bpf::BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0)?;
        let n = stream.sources.len() as u32;
        let prog = bpf::load_sender(cursor.as_fd(), list.fd.as_fd(), n, ifindex, stream.v6)?;
        Ok(Sender {
            prog,
            _list: list,
            _cursor: cursor,
            frame: stream.frame.clone(),
            chunk: 1 << 20,
            multiple: if stream.clean > 0 { n } else { 1 },
        })
    }

    /// Sends for at least `secs` in chunks of about a second; returns the
    /// frames sent and the time taken.
    fn run(&mut self, ns: &Netns, secs: f64, cpu: usize) -> Result<(u64, Duration)> {
        let t0 = Instant::now();
        let mut sent = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            let n = (self.chunk / self.multiple).max(1) * self.multiple;
            let t = Instant::now();
            let fd = self.prog.as_fd();
            let frame = &self.frame;
            ns.run(|| {
                pin_to(cpu);
                bpf::test_run_live(fd, frame, n, 0)
            })??;
            sent += u64::from(n);
            let dt = t.elapsed().as_secs_f64().max(1e-3);
            self.chunk = ((f64::from(n) / dt) as u32).clamp(1 << 14, 1 << 28);
        }
        Ok((sent, t0.elapsed()))
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data and CPU_SET stays within it for any
    // index below CPU_SETSIZE; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// How a setup counts what it dropped (or, for "no filter", passed).
enum Counter {
    /// u64 slot 0 of a per-CPU array a hand-written program adds to.
    Program(OwnedFd),
    Fail2xdp,
    XdpFilter,
    /// The counter of the one rule in `nft list chain netdev f2xbench ingress`.
    Nft,
    /// The packets of rule lines with target DROP in `iptables -t TABLE -L CHAIN -v -x -n`.
    Iptables {
        table: &'static str,
        chain: &'static str,
    },
}

/// What keeps a setup alive: programs, links, the instance.
#[derive(Default)]
struct Keep {
    links: Vec<OwnedFd>,
    progs: Vec<OwnedFd>,
    fail2xdp: Option<Instance>,
    xdp_filter: Option<XdpFilter>,
}

struct Setup {
    /// Which row and column of the tables.
    row: &'static str,
    col: &'static str,
    ns: Netns,
    sender: Sender,
    counter: Counter,
    keep: Keep,
    rates: Vec<f64>,
    /// Mixed stream: (frames sent, dropped, passed) over all rounds.
    mixed: Option<(u64, u64, u64)>,
    clean_share: usize,
    sources: usize,
}

impl Setup {
    fn count(&self) -> Result<u64> {
        match &self.counter {
            Counter::Program(map) => bpf::percpu_sum(map.as_fd(), 0),
            Counter::Fail2xdp => Ok(self.f2x_stats()?.drop_pkts),
            Counter::XdpFilter => {
                let xf = self.keep.xdp_filter.as_ref().context("xdp-filter")?;
                let md = xf.map("xdp_stats_map")?;
                let arr: aya::maps::PerCpuArray<MapData, [u64; 2]> =
                    aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(md))?;
                Ok(arr.get(&bpf::XDP_DROP, 0)?.iter().map(|v| v[0]).sum())
            }
            Counter::Nft => {
                let out = run_in(
                    &self.ns,
                    "nft",
                    &["-j", "list", "chain", "netdev", "f2xbench", "ingress"],
                    None,
                )?;
                let v: serde_json::Value = serde_json::from_str(&out)?;
                find_counter(&v).with_context(|| format!("no counter in {out}"))
            }
            Counter::Iptables { table, chain } => {
                let out = run_in(
                    &self.ns,
                    "iptables",
                    &["-t", table, "-L", chain, "-v", "-x", "-n"],
                    None,
                )?;
                Ok(out
                    .lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.len() > 2 && f[2] == "DROP").then(|| f[0].parse::<u64>().ok())?
                    })
                    .sum())
            }
        }
    }

    fn f2x_stats(&self) -> Result<Stats> {
        Ok(self
            .keep
            .fail2xdp
            .as_ref()
            .context("fail2xdp instance")?
            .enforcer
            .stats()?)
    }
}

fn find_counter(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(c) = m.get("counter").and_then(|c| c.get("packets")) {
                return c.as_u64();
            }
            m.values().find_map(find_counter)
        }
        serde_json::Value::Array(a) => a.iter().find_map(find_counter),
        _ => None,
    }
}

/// Runs `program args` in `ns` (stdin from `input`); returns stdout.
fn run_in(ns: &Netns, program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let mut cmd = ns.command(program)?;
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {program} (is it installed? `cargo xtask prereqs`)"))?;
    if let Some(s) = input {
        let mut stdin = child.stdin.take().context("stdin")?;
        let s = s.to_string();
        let w = std::thread::spawn(move || stdin.write_all(s.as_bytes()));
        let out = child.wait_with_output()?;
        w.join()
            .map_err(|_| anyhow::anyhow!("stdin writer panicked"))??;
        return finish(program, args, out);
    }
    finish(program, args, child.wait_with_output()?)
}

fn finish(program: &str, args: &[&str], out: std::process::Output) -> Result<String> {
    if !out.status.success() {
        // nft echoes the offending line: a whole set of addresses.
        let err = String::from_utf8_lossy(&out.stderr);
        let err: String = err.trim().chars().take(1500).collect();
        bail!("{program} {}: {err}", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespaces: one sender, and a receiver per setup with a veth to it.
struct Lab {
    send: Netns,
    next: u32,
}

impl Lab {
    fn new() -> Result<Self> {
        let send = Netns::create(&unique_name("f2x-bench"))?;
        send.ip(&["link", "set", "lo", "up"])?;
        Ok(Lab { send, next: 0 })
    }

    /// A receiver namespace with a veth to the sender; returns it, the
    /// receiving interface's name and the sender side's ifindex.
    fn receiver(&mut self) -> Result<(Netns, String, u32)> {
        let ns = Netns::create(&unique_name("f2x-bench"))?;
        let id = format!("{:x}{:x}", std::process::id(), self.next);
        self.next += 1;
        let (s_if, r_if) = (format!("ps{id}"), format!("pr{id}"));
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        self.send.ip(&[
            "link",
            "add",
            &s_if,
            "address",
            &mac(SEND_MAC),
            "type",
            "veth",
            "peer",
            "name",
            &r_if,
            "netns",
            ns.name(),
            "address",
            &mac(RECV_MAC),
        ])?;
        self.send.ip(&["link", "set", &s_if, "up"])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["addr", "add", &format!("{RECV_V4}/24"), "dev", &r_if])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{RECV_V6}/64"),
            "dev",
            &r_if,
            "nodad",
        ])?;
        ns.ip(&["link", "set", &r_if, "up"])?;
        let v: serde_json::Value =
            serde_json::from_str(&self.send.ip(&["-j", "link", "show", "dev", &s_if])?)?;
        let idx = v[0]["ifindex"]
            .as_u64()
            .with_context(|| format!("no ifindex for {s_if}"))? as u32;
        Ok((ns, r_if, idx))
    }
}

fn ifindex_in(ns: &Netns, ifname: &str) -> Result<u32> {
    let v: serde_json::Value =
        serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", ifname])?)?;
    Ok(v[0]["ifindex"]
        .as_u64()
        .with_context(|| format!("no ifindex for {ifname}"))? as u32)
}

/// A hand-written counting program attached natively to `r_if`.
fn counting(ns: &Netns, r_if: &str, verdict: u32, keep: &mut Keep) -> Result<Counter> {
    let counter = bpf::map_create(bpf::BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 1, 0)?;
    let prog = bpf::load_counting(
        counter.as_fd(),
        verdict,
        if verdict == bpf::XDP_DROP {
            "f2x_floor"
        } else {
            "f2x_pass"
        },
    )?;
    let idx = ifindex_in(ns, r_if)?;
    let fd = prog.as_fd();
    let link = ns.run(|| bpf::xdp_link(fd, idx, bpf::XDP_FLAGS_DRV_MODE))??;
    keep.links.push(link);
    keep.progs.push(prog);
    Ok(Counter::Program(counter))
}

fn ban(net: IpNet) -> BanRequest {
    BanRequest {
        net,
        ttl: None,
        ports: PortSet::all(),
        jail: "bench".into(),
        mode: WriteMode::Replace,
    }
}

/// fail2xdp with `bans` on `r_if`, through the real enforcer.
fn fail2xdp(ns: &Netns, r_if: &str, bans: &[IpNet], keep: &mut Keep) -> Result<Counter> {
    let n = (bans.len() as u32).max(1024);
    let caps = Capacities {
        bans_v4: n,
        bans_v6: n,
        pfx_v4: n,
        pfx_v6: n,
        allow_v4: 1024,
        allow_v6: 1024,
        jails: 64,
    };
    let mut inst = Instance::new(&caps)?;
    let reqs: Vec<BanRequest> = bans.iter().map(|n| ban(*n)).collect();
    inst.enforcer.ban_batch(&reqs).context("loading the bans")?;
    let r_if = r_if.to_string();
    let enf = &mut inst.enforcer;
    ns.run(move || enf.attach(&r_if, XdpMode::Native))??;
    keep.fail2xdp = Some(inst);
    Ok(Counter::Fail2xdp)
}

fn nft_set(ns: &Netns, r_if: &str, bans: &[IpNet], keep: &mut Keep) -> Result<Counter> {
    counting(ns, r_if, bpf::XDP_PASS, keep)?;
    let v6 = bans.first().is_some_and(|b| matches!(b, IpNet::V6(_)));
    let interval = bans.iter().any(|b| b.prefix_len() != b.max_prefix_len());
    let (ty, m) = if v6 {
        ("ipv6_addr", "ip6")
    } else {
        ("ipv4_addr", "ip")
    };
    let mut script = format!(
        "table netdev f2xbench {{\n set banned {{ type {ty}; {} size {}; }}\n chain ingress {{ type filter hook ingress device \"{r_if}\" priority -500; {m} saddr @banned counter drop; }}\n}}\n",
        if interval { "flags interval;" } else { "" },
        (bans.len() * 2).max(1024)
    );
    for chunk in bans.chunks(50_000) {
        script.push_str("add element netdev f2xbench banned { ");
        for (i, b) in chunk.iter().enumerate() {
            if i > 0 {
                script.push_str(", ");
            }
            if interval {
                script.push_str(&b.to_string());
            } else {
                script.push_str(&b.addr().to_string());
            }
        }
        script.push_str(" }\n");
    }
    run_in(ns, "nft", &["-f", "-"], Some(&script))?;
    Ok(Counter::Nft)
}

fn ipset(ns: &Netns, r_if: &str, bans: &[IpNet], keep: &mut Keep) -> Result<Counter> {
    counting(ns, r_if, bpf::XDP_PASS, keep)?;
    let mut script = format!(
        "create f2xb hash:ip family inet hashsize {} maxelem {}\n",
        (bans.len() as u32).next_power_of_two().max(1024),
        (bans.len() * 2).max(65536)
    );
    for b in bans {
        script.push_str(&format!("add f2xb {}\n", b.addr()));
    }
    run_in(ns, "ipset", &["restore"], Some(&script))?;
    run_in(
        ns,
        "iptables",
        &[
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-m",
            "set",
            "--match-set",
            "f2xb",
            "src",
            "-j",
            "DROP",
        ],
        None,
    )?;
    Ok(Counter::Iptables {
        table: "raw",
        chain: "PREROUTING",
    })
}

/// fail2ban's default action: a chain of one rule per address, jumped to
/// from INPUT for the jail's port (DROP here, so its own counters count).
fn iptables_rules(ns: &Netns, r_if: &str, bans: &[IpNet], keep: &mut Keep) -> Result<Counter> {
    counting(ns, r_if, bpf::XDP_PASS, keep)?;
    let mut script = String::from("*filter\n:f2b-bench - [0:0]\n");
    for b in bans {
        script.push_str(&format!("-A f2b-bench -s {}/32 -j DROP\n", b.addr()));
    }
    script.push_str(
        "-A f2b-bench -j RETURN\n-A INPUT -p tcp -m multiport --dports 25 -j f2b-bench\nCOMMIT\n",
    );
    run_in(ns, "iptables-restore", &[], Some(&script))?;
    Ok(Counter::Iptables {
        table: "filter",
        chain: "f2b-bench",
    })
}

fn xdp_filter(ns: &Netns, r_if: &str, bans: &[IpNet], keep: &mut Keep) -> Result<Counter> {
    let xf = XdpFilter::load(&ns.path(), r_if, false, "allow")?;
    let first = bans.first().context("no bans")?;
    xf.add_src(&first.addr().to_string())?;
    let mut v4: PerCpuHashMap<MapData, [u8; 4], u64> =
        PerCpuHashMap::try_from(aya::maps::Map::PerCpuHashMap(xf.map("filter_ipv4")?))?;
    let IpAddr::V4(a0) = first.addr() else {
        bail!("the xdp-filter setup is IPv4");
    };
    let val: Vec<u64> = v4.get(&a0.octets(), 0)?.iter().copied().collect();
    for b in &bans[1..] {
        if let IpAddr::V4(a) = b.addr() {
            v4.insert(a.octets(), PerCpuValues::try_from(val.clone())?, 0)?;
        }
    }
    keep.xdp_filter = Some(xf);
    Ok(Counter::XdpFilter)
}

/// Nanoseconds per load of a pointer chase over `bytes` of memory in a
/// random cycle: each load waits for the one before.
fn chase_ns(bytes: usize) -> f64 {
    let n = bytes / 8;
    let mut next: Vec<usize> = (0..n).collect();
    let mut rnd = fail2xdp_tests::rng::below(0x5eed);
    // Sattolo's shuffle: one cycle through every slot.
    for i in (1..n).rev() {
        let j = rnd(i as u64) as usize;
        next.swap(i, j);
    }
    let steps = 20_000_000usize.min(n * 20).max(1_000_000);
    let mut p = 0;
    let t = Instant::now();
    for _ in 0..steps {
        p = next[p];
    }
    std::hint::black_box(p);
    t.elapsed().as_nanos() as f64 / steps as f64
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn mpps(r: f64) -> String {
    format!("{:.2}", r / 1e6)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench packets failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

type Make = fn(&Netns, &str, &[IpNet], &mut Keep) -> Result<Counter>;

fn run() -> Result<()> {
    fail2xdp_tests::check_privileges().map_err(anyhow::Error::msg)?;
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let secs = env("F2X_PACKETS_SECONDS", 4.0);
    let rounds = env("F2X_PACKETS_ROUNDS", 5.0) as usize;
    let max = env("F2X_PACKETS_MAX", 1_000_000.0) as usize;
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() }.max(0) as usize;

    let v4set = |n: usize| -> Vec<IpNet> {
        (0..n as u32)
            .map(|i| IpNet::from(IpAddr::V4(banned_v4(i))))
            .collect()
    };
    let mut lab = Lab::new()?;
    let mut setups: Vec<Setup> = Vec::new();
    let mut add = |lab: &mut Lab,
                   row: &'static str,
                   col: &'static str,
                   bans: &[IpNet],
                   stream: &Stream,
                   make: Make|
     -> Result<()> {
        // F2X_PACKETS_ONLY=col,col limits the setups (for profiling one).
        if let Ok(only) = std::env::var("F2X_PACKETS_ONLY")
            && !only.split(',').any(|c| c == col)
        {
            return Ok(());
        }
        eprintln!("setting up {row}: {col} ...");
        let (ns, r_if, s_idx) = lab.receiver()?;
        let mut keep = Keep::default();
        let counter = make(&ns, &r_if, bans, &mut keep).with_context(|| format!("{row}: {col}"))?;
        let sender = Sender::new(stream, s_idx)?;
        setups.push(Setup {
            row,
            col,
            ns,
            sender,
            counter,
            keep,
            rates: Vec::new(),
            mixed: None,
            clean_share: stream.clean,
            sources: stream.sources.len(),
        });
        Ok(())
    };
    let floor: Make = |ns, r_if, _, keep| counting(ns, r_if, bpf::XDP_DROP, keep);
    let none: Make = |ns, r_if, _, keep| counting(ns, r_if, bpf::XDP_PASS, keep);

    for (row, n) in [
        ("IPv4, 10,000 banned", 10_000),
        ("IPv4, 100,000 banned", 100_000),
        ("IPv4, 1,000,000 banned", 1_000_000),
    ] {
        if n > max {
            continue;
        }
        let bans = v4set(n);
        let stream = Stream::new(bans.iter().map(|b| b.addr()).collect(), 0);
        add(&mut lab, row, "XDP_DROP floor", &bans, &stream, floor)?;
        add(&mut lab, row, "fail2xdp", &bans, &stream, fail2xdp)?;
        if n <= 10_000 {
            add(&mut lab, row, "xdp-filter", &bans, &stream, xdp_filter)?;
        }
        add(&mut lab, row, "nft set", &bans, &stream, nft_set)?;
        add(&mut lab, row, "ipset", &bans, &stream, ipset)?;
        add(&mut lab, row, "no filter", &bans, &stream, none)?;
    }
    {
        let row = "IPv4, 1,000 banned, one iptables rule each";
        let bans = v4set(1000);
        let stream = Stream::new(bans.iter().map(|b| b.addr()).collect(), 0);
        add(&mut lab, row, "XDP_DROP floor", &bans, &stream, floor)?;
        add(&mut lab, row, "fail2xdp", &bans, &stream, fail2xdp)?;
        add(
            &mut lab,
            row,
            "iptables rules",
            &bans,
            &stream,
            iptables_rules,
        )?;
    }
    {
        let row = "IPv4 mixed: 10,000 banned, 10 % clean sources";
        let bans = v4set(9_000);
        let mut sources = Vec::new();
        for i in 0..10_000u32 {
            sources.push(if i % 10 == 9 {
                IpAddr::V4(clean_v4(i / 10))
            } else {
                IpAddr::V4(banned_v4(i - i / 10))
            });
        }
        let stream = Stream::new(sources, 1000);
        add(&mut lab, row, "XDP_DROP floor", &bans, &stream, floor)?;
        add(&mut lab, row, "fail2xdp", &bans, &stream, fail2xdp)?;
    }
    if max >= 1_000_000 {
        let row = "IPv6, 1,000,000 /128 banned";
        let bans: Vec<IpNet> = (0..1_000_000u32)
            .map(|i| IpNet::from(IpAddr::V6(banned_v6(i))))
            .collect();
        let stream = Stream::new(bans.iter().map(|b| b.addr()).collect(), 0);
        add(&mut lab, row, "XDP_DROP floor", &bans, &stream, floor)?;
        add(&mut lab, row, "fail2xdp", &bans, &stream, fail2xdp)?;
        add(&mut lab, row, "nft set", &bans, &stream, nft_set)?;
    }
    if max >= 100_000 {
        let row = "IPv6, 100,000 /64 banned";
        let (bans, sources): (Vec<IpNet>, Vec<IpAddr>) = (0..100_000u32)
            .map(|i| {
                let (net, src) = banned_p6(i);
                (
                    IpNet::new(IpAddr::V6(net), 64).expect("/64"),
                    IpAddr::V6(src),
                )
            })
            .unzip();
        let stream = Stream::new(sources, 0);
        add(&mut lab, row, "XDP_DROP floor", &bans, &stream, floor)?;
        add(&mut lab, row, "fail2xdp", &bans, &stream, fail2xdp)?;
        add(&mut lab, row, "nft set", &bans, &stream, nft_set)?;
    }

    // Rounds: every setup in turn, each for `secs`.
    for r in 0..rounds {
        eprintln!("round {} of {rounds} ...", r + 1);
        for s in &mut setups {
            let (c0, st0) = (
                s.count()?,
                match s.counter {
                    Counter::Fail2xdp => Some(s.f2x_stats()?),
                    _ => None,
                },
            );
            let (sent, dt) = s.sender.run(&lab.send, secs, cpu)?;
            let c1 = s.count()?;
            s.rates.push((c1 - c0) as f64 / dt.as_secs_f64());
            if s.clean_share > 0
                && let Some(st0) = st0
            {
                let st1 = s.f2x_stats()?;
                let m = s.mixed.get_or_insert((0, 0, 0));
                m.0 += sent;
                m.1 += st1.drop_pkts - st0.drop_pkts;
                m.2 += st1.pass_pkts - st0.pass_pkts;
            }
        }
    }
    report(&setups, rounds, secs)?;
    load_times(max)?;
    machine()?;
    Ok(())
}

fn report(setups: &[Setup], rounds: usize, secs: f64) -> Result<()> {
    let mut rows: BTreeMap<&str, Vec<&Setup>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for s in setups {
        if !rows.contains_key(s.row) {
            order.push(s.row);
        }
        rows.entry(s.row).or_default().push(s);
    }
    println!();
    println!(
        "### fail2xdp under a flood, live frames into a veth (native XDP), {rounds} rounds of \
         {secs} s per setup; median packets/s dropped (Mpps), and fail2xdp's rate over each \
         setup's in the same round (median of per-round ratios)"
    );
    println!();
    let cols = [
        "XDP_DROP floor",
        "xdp-filter",
        "nft set",
        "ipset",
        "iptables rules",
        "no filter",
    ];
    println!(
        "| banned set | fail2xdp Mpps | floor Mpps | fail2xdp / floor | / xdp-filter | / nft set | / ipset | / iptables rules | no filter (into the stack) Mpps |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &order {
        let ss = &rows[row];
        let ours = ss.iter().find(|s| s.col == "fail2xdp");
        let get = |c: &str| ss.iter().find(|s| s.col == c);
        let ratio = |c: &str| -> String {
            match (ours, get(c)) {
                (Some(o), Some(p)) => {
                    let r: Vec<f64> = o.rates.iter().zip(&p.rates).map(|(a, b)| a / b).collect();
                    format!("{:.2}", median(&r))
                }
                _ => "–".into(),
            }
        };
        let floor = get(cols[0]).map_or("–".into(), |s| mpps(median(&s.rates)));
        println!(
            "| {row} | {} | {floor} | {} | {} | {} | {} | {} | {} |",
            ours.map_or("–".into(), |s| mpps(median(&s.rates))),
            ratio(cols[0]),
            ratio(cols[1]),
            ratio(cols[2]),
            ratio(cols[3]),
            ratio(cols[4]),
            get(cols[5]).map_or("–".into(), |s| mpps(median(&s.rates))),
        );
    }
    println!();
    println!("Per round (Mpps dropped; \"no filter\": passed into the stack):");
    println!();
    println!(
        "| banned set | setup | {} |",
        (1..=rounds)
            .map(|r| format!("round {r}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|{}", "---:|".repeat(rounds));
    for s in setups {
        println!(
            "| {} | {} | {} |",
            s.row,
            s.col,
            s.rates
                .iter()
                .map(|r| mpps(*r))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    for s in setups {
        if let Some((sent, dropped, passed)) = s.mixed {
            let want_pass = sent * s.clean_share as u64 / s.sources as u64;
            println!();
            println!(
                "Mixed stream: {sent} frames sent, {dropped} dropped, {passed} passed ({} \
                 clean frames sent): {}.",
                want_pass,
                // Passes may include the link's own chatter (IPv6 router
                // solicitations), so the check is on the drops: exactly the
                // banned frames, hence every clean frame went through.
                if dropped == sent - want_pass && passed >= want_pass {
                    "every clean packet arrived, every banned one was dropped".to_string()
                } else {
                    format!(
                        "MISMATCH: {} clean frames missing, {} banned frames not dropped",
                        want_pass.saturating_sub(passed),
                        (sent - want_pass).saturating_sub(dropped)
                    )
                }
            );
        }
    }
    Ok(())
}

/// Time to load the bans through `fail2xdp ban --file`, beside `nft add
/// element` of the same set.
fn load_times(max: usize) -> Result<()> {
    let bin = fail2xdp_tests::fail2xdp_bin();
    println!();
    println!("Load times (wall clock, {}):", bin.display());
    println!();
    println!("| bans | fail2xdp ban --file | nft add element (one set) |");
    println!("|---:|---:|---:|");
    for n in [100_000usize, 1_000_000] {
        if n > max {
            continue;
        }
        let dir = tempfile::Builder::new().prefix("f2x-bench-").tempdir()?;
        let file = dir.path().join("bans.txt");
        let mut text = String::with_capacity(n * 16);
        for i in 0..n as u32 {
            text.push_str(&banned_v4(i).to_string());
            text.push('\n');
        }
        fs::write(&file, &text)?;
        fs::create_dir(dir.path().join("state"))?;
        let pin = PathBuf::from("/sys/fs/bpf").join(unique_name("f2x-bench"));
        let t = Instant::now();
        let out = Command::new(&bin)
            .arg("--pin-dir")
            .arg(&pin)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--socket")
            .arg(dir.path().join("none.sock"))
            .args(["ban", "--file"])
            .arg(&file)
            .output()
            .context("running fail2xdp ban --file")?;
        let f2x = t.elapsed();
        let _ = fail2xdp::enforcer::detach(&pin, &[]);
        if !out.status.success() {
            bail!(
                "fail2xdp ban --file: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let ns = Netns::create(&unique_name("f2x-bench"))?;
        let mut script = format!(
            "table netdev f2xload {{\n set banned {{ type ipv4_addr; size {}; }}\n}}\n",
            n * 2
        );
        for chunk in text.lines().collect::<Vec<_>>().chunks(50_000) {
            script.push_str("add element netdev f2xload banned { ");
            script.push_str(&chunk.join(", "));
            script.push_str(" }\n");
        }
        let t = Instant::now();
        run_in(&ns, "nft", &["-f", "-"], Some(&script))?;
        let nft = t.elapsed();
        println!(
            "| {} | {:.2} s | {:.2} s |",
            thousands(n as u64),
            f2x.as_secs_f64(),
            nft.as_secs_f64()
        );
    }
    Ok(())
}

fn machine() -> Result<()> {
    println!();
    let lscpu = Command::new("lscpu")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let pick = |k: &str| {
        lscpu
            .lines()
            .find(|l| l.starts_with(k))
            .map(|l| l[k.len()..].trim_start_matches([':', ' ']).to_string())
            .unwrap_or_default()
    };
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "Machine: {} ({} CPUs, {}), L1d {}, L2 {}, L3 {}; kernel {}; {}.",
        pick("Model name"),
        pick("CPU(s)"),
        pick("Hypervisor vendor"),
        pick("L1d cache"),
        pick("L2 cache"),
        pick("L3 cache"),
        kernel.trim(),
        Command::new("iptables")
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    println!(
        "Memory latency (dependent loads in a random cycle): 64 KiB {:.1} ns, 1 MiB {:.1} ns, \
         16 MiB {:.1} ns, 256 MiB {:.1} ns.",
        chase_ns(64 << 10),
        chase_ns(1 << 20),
        chase_ns(16 << 20),
        chase_ns(256 << 20)
    );
    Ok(())
}

//! Per-packet cost of the XDP program, measured by the kernel itself:
//! BPF_PROG_TEST_RUN on a 64-byte TCP SYN to port 25 (IPv6: 74 bytes, its
//! minimum), repeated a million times per call, beside the trivial `xdp_pass`
//! of the same object and beside xdp-filter (xdp-tools) holding the same
//! addresses. Every program goes through the same raw bpf(2) calls. The
//! tables are filled through the real enforcer up to their capacity (a
//! million bans in the default 1,048,576), which also times the load.
//!
//! One repeated packet keeps its own bucket in L1, so this measures the
//! instructions, not the cache misses a flood of many sources causes; that
//! is `cargo xtask bench packets`. What the layout reads per lookup is
//! surveyed here too: how many clean sources need a second bucket, how many
//! bans sit in theirs.
//!
//! Run as root: `cargo xtask bench dataplane` (= `cargo bench -p fail2xdp-tests
//! --bench dataplane`). F2X_BENCH_REPEAT and F2X_BENCH_ROUNDS override the
//! repetitions per call (default 1,000,000) and calls per number (median of 11).
//!
//! Map contents are inert keys for a program that is never attached; only the
//! measured packets' addresses (documentation ranges) matter.

use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
use fail2xdp::enforcer::{BanRequest, Capacities, IpNet, PortSet, WriteMode};
use fail2xdp_common::PROG_NAME;
use fail2xdp_tests::{
    Instance, Netns, Probe, XdpFilter,
    bpf::{self, XDP_DROP, XDP_PASS},
    thousands, unique_name,
};

const BANNED_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const CLEAN_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const BANNED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 7, 0, 0, 0, 7);
const CLEAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 9);

struct Opts {
    repeat: u32,
    rounds: usize,
}

/// Runs `prog` and `trivial` in alternation, `rounds` calls of `repeat` runs
/// each, so load from other processes hits both alike; returns the medians of
/// `prog`'s cost and of its excess over `trivial`. Checks the verdicts first.
fn measure(
    o: &Opts,
    prog: BorrowedFd<'_>,
    trivial: BorrowedFd<'_>,
    pkt: &[u8],
    want: u32,
) -> Result<Measure> {
    for (fd, want) in [(prog, want), (trivial, XDP_PASS)] {
        let (verdict, _) = bpf::test_run(fd, pkt, 1)?;
        if verdict != want {
            return Ok(Measure::Wrong(verdict));
        }
    }
    let (mut abs, mut base, mut over) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..o.rounds {
        let a = bpf::test_run(prog, pkt, o.repeat)?.1;
        let t = bpf::test_run(trivial, pkt, o.repeat)?.1;
        abs.push(a);
        base.push(t);
        over.push(i64::from(a) - i64::from(t));
    }
    Ok(Measure::Ns {
        abs: median(&mut abs),
        trivial: median(&mut base),
        over: median(&mut over),
    })
}

fn median<T: Ord + Copy>(v: &mut [T]) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}

#[derive(Clone, Copy, Debug)]
enum Measure {
    /// Median ns/packet of the program, of the trivial program, and of the
    /// per-round difference.
    Ns { abs: u32, trivial: u32, over: i64 },
    /// The program gave this verdict instead of the expected one.
    Wrong(u32),
}

impl Measure {
    fn over(self) -> Option<i64> {
        match self {
            Measure::Ns { over, .. } => Some(over),
            Measure::Wrong(_) => None,
        }
    }
    fn show(self) -> String {
        match self {
            Measure::Ns { abs, over, .. } => format!("{abs} ({over:+})"),
            Measure::Wrong(v) => format!("WRONG VERDICT {v}"),
        }
    }
}

/// Keeps this thread on the CPU it runs on: test runs of every program then
/// share one core's caches and frequency.
fn pin_to_current_cpu() {
    // SAFETY: sched_getcpu has no preconditions; cpu_set_t is plain data and
    // CPU_SET stays within it for any cpu index the kernel returns.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn packet(src: IpAddr) -> Vec<u8> {
    let dst = match src {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
    };
    Probe::syn(src, dst, 25).min_len(64).frame()
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

/// The i-th inert key of each family: 10.0.0.0/8 onwards and
/// 2001:db8:eeee::/48, far from the measured sources.
fn inert_v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32 + i)
}

fn inert_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xeeee, 0, 0, 0, (i >> 16) as u16, i as u16)
}

/// Fills the exact tables from `from` to `n` bans per family (the banned
/// sources first); returns how long the enforcer took per family.
fn fill_exact(ours: &mut Instance, from: u32, n: u32) -> Result<Vec<Duration>> {
    let mut times = Vec::new();
    for v6 in [false, true] {
        let mut reqs = Vec::new();
        if from == 0 {
            reqs.push(ban(if v6 {
                IpNet::from(IpAddr::V6(BANNED_V6))
            } else {
                IpNet::from(IpAddr::V4(BANNED_V4))
            }));
        }
        for i in from.max(1)..n {
            let a: IpAddr = if v6 {
                inert_v6(i).into()
            } else {
                inert_v4(i).into()
            };
            reqs.push(ban(a.into()));
        }
        let t0 = Instant::now();
        ours.enforcer
            .ban_batch(&reqs)
            .context("filling the exact table")?;
        times.push(t0.elapsed());
    }
    Ok(times)
}

/// 10,000 prefix bans per family: half /24 and half /16 (v4), half /64
/// and half /48 (v6), each family's banned source under a /24 or /64.
fn fill_prefixes(ours: &mut Instance) -> Result<()> {
    let mut reqs = vec![
        ban(IpNet::new(IpAddr::V4(BANNED_V4), 24)?.trunc()),
        ban(IpNet::new(IpAddr::V6(BANNED_V6), 64)?.trunc()),
    ];
    for i in 1..5000u32 {
        reqs.push(ban(IpNet::new(
            Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(),
            24,
        )?));
        let a = Ipv6Addr::new(0x2001, 0xdb8, 2, i as u16, 0, 0, 0, 0);
        reqs.push(ban(IpNet::new(a.into(), 64)?));
    }
    for i in 0..5000u32 {
        reqs.push(ban(IpNet::new(
            Ipv4Addr::from(0x1400_0000 + (i << 16)).into(),
            16,
        )?));
        let a = Ipv6Addr::new(0x2001, 0xdb8, 0x1000 + i as u16, 0, 0, 0, 0, 0);
        reqs.push(ban(IpNet::new(a.into(), 48)?));
    }
    ours.enforcer
        .ban_batch(&reqs)
        .context("filling the prefix tables")?;
    Ok(())
}

/// How xdp-filter is loaded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Variant {
    /// `xdp-filter load <if>`: every feature, behind libxdp's dispatcher
    /// where the kernel allows one.
    Shipped,
    /// Address matching only, attached directly: its cheapest form.
    Lean,
}

/// xdp-filter on a veth in a namespace of its own, and its program's fd.
struct Peer {
    xf: XdpFilter,
    prog: OwnedFd,
    _ns: Netns,
}

impl Peer {
    fn start(variant: Variant) -> Result<Self> {
        let ns = Netns::create(&unique_name("f2x-bench"))?;
        let ifname = format!("xf{:x}", std::process::id());
        ns.ip(&[
            "link",
            "add",
            &ifname,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{ifname}p"),
        ])?;
        ns.ip(&["link", "set", &ifname, "up"])?;
        ns.ip(&["link", "set", &format!("{ifname}p"), "up"])?;
        let xf = XdpFilter::load(&ns.path(), &ifname, variant == Variant::Lean, "allow")?;
        let link = ns.ip(&["-j", "link", "show", "dev", &ifname])?;
        let v: serde_json::Value = serde_json::from_str(&link)?;
        let id = v[0]["xdp"]["prog"]["id"]
            .as_u64()
            .or_else(|| v[0]["xdp"]["attached"][0]["prog"]["id"].as_u64())
            .with_context(|| format!("no XDP program id in `ip -j link`: {link}"))?;
        let prog = bpf::prog_fd_by_id(id as u32)?;
        Ok(Peer { xf, prog, _ns: ns })
    }

    /// The banned sources through its own CLI (so the value format is its
    /// own), then the rest up to `n` per family written the same way into its
    /// maps: 10,000 process spawns would measure nothing more.
    fn fill(&self, n: u32) -> Result<()> {
        self.xf.add_src(&BANNED_V4.to_string())?;
        self.xf.add_src(&BANNED_V6.to_string())?;
        let mut v4: PerCpuHashMap<MapData, [u8; 4], u64> =
            PerCpuHashMap::try_from(aya::maps::Map::PerCpuHashMap(self.xf.map("filter_ipv4")?))?;
        let val: Vec<u64> = v4.get(&BANNED_V4.octets(), 0)?.iter().copied().collect();
        for i in 1..n {
            v4.insert(
                inert_v4(i).octets(),
                PerCpuValues::try_from(val.clone())?,
                0,
            )?;
        }
        let mut v6: PerCpuHashMap<MapData, [u8; 16], u64> =
            PerCpuHashMap::try_from(aya::maps::Map::PerCpuHashMap(self.xf.map("filter_ipv6")?))?;
        let val: Vec<u64> = v6.get(&BANNED_V6.octets(), 0)?.iter().copied().collect();
        for i in 1..n {
            v6.insert(
                inert_v6(i).octets(),
                PerCpuValues::try_from(val.clone())?,
                0,
            )?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Clean packet with exact bans at capacity fill: trivial + 15 ns.
    CleanExact,
    /// Banned packet, dropped: trivial + 20 ns.
    Banned,
    /// Clean packet with prefix bans: trivial + 60 ns (the budget before
    /// the cuckoo tables; prefix bans must not get slower).
    CleanPrefix,
}

impl Target {
    fn budget(self) -> u32 {
        match self {
            Target::CleanExact => 15,
            Target::Banned => 20,
            Target::CleanPrefix => 60,
        }
    }
}

struct Row {
    case: String,
    ours: Measure,
    /// xdp-filter as shipped, and lean.
    peer: [Option<Measure>; 2],
    /// How the xdp-filter numbers differ from the case, if they do.
    peer_note: Option<&'static str>,
    target: Target,
}

impl Row {
    /// Within the budget over trivial, and no slower than xdp-filter as
    /// shipped (`xdp-filter load <if>`), both as excess over trivial.
    fn met(&self) -> bool {
        let Some(o) = self.ours.over() else {
            return false;
        };
        let vs_peer = self.peer[0].and_then(Measure::over).is_none_or(|p| o <= p);
        o <= i64::from(self.target.budget()) && vs_peer
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("some targets were missed (see the table)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench dataplane failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Capacities of a real default instance: a million exact bans per family.
fn full_size() -> Capacities {
    Capacities::default()
}

fn run() -> Result<bool> {
    fail2xdp_tests::check_privileges().map_err(anyhow::Error::msg)?;
    pin_to_current_cpu();
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let o = Opts {
        repeat: env("F2X_BENCH_REPEAT", 1_000_000) as u32,
        rounds: env("F2X_BENCH_ROUNDS", 11) as usize,
    };
    let v4 = |a: Ipv4Addr| packet(IpAddr::V4(a));
    let v6 = |a: Ipv6Addr| packet(IpAddr::V6(a));
    let pkts = [
        ("IPv4", v4(BANNED_V4), v4(CLEAN_V4)),
        ("IPv6", v6(BANNED_V6), v6(CLEAN_V6)),
    ];

    // Every program is measured against the same trivial one: the object's
    // xdp_pass, loaded once and kept for the whole run.
    let mut ours = Instance::new(&full_size())?;
    let trivial = ours.prog("xdp_pass")?.try_clone_to_owned()?;

    let mut peer_ns: HashMap<(Variant, &str, bool, u32), Measure> = HashMap::new();
    let mut peer_dispatched = None;
    for variant in [Variant::Shipped, Variant::Lean] {
        eprintln!("loading xdp-filter ({variant:?}) on a veth in a namespace of its own ...");
        let peer = match Peer::start(variant) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("xdp-filter peer unavailable: {e:#}");
                continue;
            }
        };
        if variant == Variant::Shipped {
            peer_dispatched = Some(fail2xdp::enforcer::dispatcher_supported().unwrap_or(false));
        }
        for n in [0u32, 10_000] {
            if n > 0 {
                eprintln!("filling xdp-filter with {n} addresses per family ...");
                peer.fill(n)?;
            }
            for (fam, banned, clean) in &pkts {
                let prog = peer.prog.as_fd();
                if n > 0 {
                    let m = measure(&o, prog, trivial.as_fd(), banned, XDP_DROP)?;
                    peer_ns.insert((variant, fam, true, n), m);
                }
                let m = measure(&o, prog, trivial.as_fd(), clean, XDP_PASS)?;
                peer_ns.insert((variant, fam, false, n), m);
            }
        }
    }

    let mut rows = Vec::new();
    // One row per case: the packet through fail2xdp, beside xdp-filter
    // holding `peer_n` addresses.
    let mut row =
        |ours: &Instance, fam: &'static str, pkt: &[u8], banned: bool, what: &str, peer_n, note| {
            let prog = ours.prog(PROG_NAME)?;
            let want = if banned { XDP_DROP } else { XDP_PASS };
            let target = match (banned, what.contains("prefix")) {
                (true, _) => Target::Banned,
                (false, false) => Target::CleanExact,
                (false, true) => Target::CleanPrefix,
            };
            let peer = |v| peer_ns.get(&(v, fam, banned, peer_n)).copied();
            rows.push(Row {
                case: format!("{fam} {}, {what}", if banned { "banned" } else { "clean" }),
                ours: measure(&o, prog, trivial.as_fd(), pkt, want)?,
                peer: [peer(Variant::Shipped), peer(Variant::Lean)],
                peer_note: note,
                target,
            });
            anyhow::Ok(())
        };

    // Where the time goes without any lookup: a frame that is not IP only
    // meets the parser and the counters.
    let arp = {
        let mut f = packet(IpAddr::V4(CLEAN_V4));
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        f
    };
    let fixed = measure(&o, ours.prog(PROG_NAME)?, trivial.as_fd(), &arp, XDP_PASS)?;
    // And what one hash probe alone costs here, missing and hitting.
    let map = bpf::map_create(
        bpf::BPF_MAP_TYPE_HASH,
        4,
        16,
        1 << 20,
        bpf::BPF_F_NO_PREALLOC,
    )?;
    let probe = bpf::load_lookup(map.as_fd(), 0x0a00_0001)?;
    let lookup_miss = measure(&o, probe.as_fd(), trivial.as_fd(), &arp, XDP_PASS)?;
    bpf::map_update(map.as_fd(), &0x0a00_0001u32.to_ne_bytes(), &[0; 16])?;
    let lookup_hit = measure(&o, probe.as_fd(), trivial.as_fd(), &arp, XDP_PASS)?;
    drop((probe, map));
    let mut filled = 0;
    let mut surveys = Vec::new();
    let mut cycles = Vec::new();
    let mut loads = Vec::new();
    for n in [0u32, 10_000, 1_000_000] {
        if n > 0 {
            eprintln!("filling {n} exact bans per family ...");
            let t = fill_exact(&mut ours, filled, n)?;
            loads.push((filled, n, t));
            filled = n;
        }
        let note = (n > 10_000).then_some("at 10,000, its map's limit");
        let what = match n {
            0 => "no bans".to_string(),
            n => format!("{} exact bans", thousands(n)),
        };
        if n > 0 {
            surveys.push(survey(&ours, n)?);
            let v4: Vec<IpAddr> = std::iter::once(IpAddr::V4(BANNED_V4))
                .chain((1..n).map(|i| inert_v4(i).into()))
                .collect();
            let v6: Vec<IpAddr> = std::iter::once(IpAddr::V6(BANNED_V6))
                .chain((1..n).map(|i| inert_v6(i).into()))
                .collect();
            let c4: Vec<IpAddr> = (0..n)
                .map(|i| Ipv4Addr::from(0x0a80_0000u32 + i).into())
                .collect();
            let c6: Vec<IpAddr> = (0..n)
                .map(|i| {
                    Ipv6Addr::new(0x2001, 0xdb8, 0xdddd, 0, 0, 0, (i >> 16) as u16, i as u16).into()
                })
                .collect();
            cycles.push((
                n,
                [
                    cycling(&ours, &o, &v4, XDP_DROP)?,
                    cycling(&ours, &o, &v6, XDP_DROP)?,
                    cycling(&ours, &o, &c4, XDP_PASS)?,
                    cycling(&ours, &o, &c6, XDP_PASS)?,
                ],
            ));
        }
        for (fam, banned, clean) in &pkts {
            row(&ours, fam, clean, false, &what, n.min(10_000), note)?;
            if n > 0 {
                row(&ours, fam, banned, true, &what, n.min(10_000), note)?;
            }
        }
    }
    drop(ours);

    eprintln!("loading a fresh instance with 10,000 prefix bans per family ...");
    let mut ours = Instance::new(&full_size())?;
    fill_prefixes(&mut ours)?;
    let note = Some("10,000 exact: it has no prefixes");
    let what = "10,000 prefix bans (/24+/16, /64+/48)";
    for (fam, banned, clean) in &pkts {
        row(&ours, fam, clean, false, what, 10_000, note)?;
        row(&ours, fam, banned, true, what, 10_000, note)?;
    }
    drop(ours);

    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    println!();
    println!(
        "### fail2xdp data plane: ns/packet by BPF_PROG_TEST_RUN (median of {} calls x {} runs, \
         each call alternating with the trivial program; (+n) = median excess over it)",
        o.rounds, o.repeat
    );
    println!();
    println!(
        "kernel {}, {cpu}; trivial = xdp_pass of the same object.",
        kernel.trim()
    );
    println!(
        "xdp-filter: *shipped* = `xdp-filter load <if>` (all features{}); *lean* = \
         `--features ipv4,ipv6`, no dispatcher; addresses added in src mode. Packets: TCP SYN \
         to port 25, 64 bytes (IPv6: 74). Tables at capacity fill: 1,000,000 bans in the \
         default 1,048,576 per family.",
        match peer_dispatched {
            Some(true) => ", behind libxdp's dispatcher",
            Some(false) =>
                "; this kernel refuses extension programs, so libxdp attached it \
                            without its dispatcher",
            None => "",
        }
    );
    println!();
    println!(
        "| case | fail2xdp | trivial | target (excess) | xdp-filter shipped | xdp-filter lean | met |"
    );
    println!("|---|---:|---:|---|---:|---:|---|");
    let mut all_met = true;
    let mut wrong = false;
    for r in &rows {
        let peer = |m: Option<Measure>| match (m, r.peer_note) {
            (Some(m), None) => m.show(),
            (Some(m), Some(note)) => format!("{} {note}", m.show()),
            (None, _) => "n/a".into(),
        };
        let trivial = match r.ours {
            Measure::Ns { trivial, .. } => trivial.to_string(),
            Measure::Wrong(_) => "-".into(),
        };
        let met = r.met();
        all_met &= met;
        wrong |= matches!(r.ours, Measure::Wrong(_));
        let vs_peer = if r.peer[0].is_some() {
            ", <= xdp-filter's"
        } else {
            ""
        };
        println!(
            "| {} | {} | {} | <= +{}{vs_peer} | {} | {} | {} |",
            r.case,
            r.ours.show(),
            trivial,
            r.target.budget(),
            peer(r.peer[0]),
            peer(r.peer[1]),
            if met { "yes" } else { "NO" }
        );
    }
    println!();
    println!(
        "Fixed cost, no lookup at all (a non-IP frame: parser and counters only): {} ns.",
        fixed.show()
    );
    println!(
        "One hash lookup alone (a hand-written program probing a BPF hash map of a \
         million 4-byte keys): miss {} ns, hit {} ns.",
        lookup_miss.show(),
        lookup_hit.show()
    );
    for (from, to, t) in &loads {
        let rate = |d: &Duration| (to - from) as f64 / d.as_secs_f64().max(1e-9);
        println!(
            "Load through the enforcer, bans {} to {}: IPv4 {:.3} s ({:.0}/s), IPv6 {:.3} s ({:.0}/s).",
            thousands(*from),
            thousands(*to),
            t[0].as_secs_f64(),
            rate(&t[0]),
            t[1].as_secs_f64(),
            rate(&t[1]),
        );
    }
    for line in &surveys {
        println!("{line}");
    }
    for (n, [b4, b6, c4, c6]) in &cycles {
        println!(
            "A flood of distinct sources at {} bans per family (each packet from the next \
             source in turn, through a wrapper that writes the source into the frame and \
             tail-calls; excess over the same wrapper tail-calling the trivial program): \
             every ban in turn IPv4 {} ns, IPv6 {} ns; as many clean sources IPv4 {} ns, \
             IPv6 {} ns.",
            thousands(*n),
            b4.show(),
            b6.show(),
            c4.show(),
            c6.show()
        );
    }
    if wrong {
        bail!("a program gave the wrong verdict (see the table): its timings mean nothing");
    }
    Ok(all_met)
}

/// The per-packet cost of fail2xdp when every packet comes from another
/// of `sources` (in turn, as in a flood): a wrapper program writes the next
/// source into the frame and tail-calls fail2xdp, measured against the same
/// wrapper tail-calling the trivial program. Cache and TLB misses of the
/// tables are in it; the veth and driver are not.
fn cycling(ours: &Instance, o: &Opts, sources: &[IpAddr], want: u32) -> Result<Measure> {
    let v6 = sources.first().is_some_and(IpAddr::is_ipv6);
    let mut list = bpf::ArrayMem::new(if v6 { 16 } else { 8 }, sources.len() as u32)?;
    for (i, a) in sources.iter().enumerate() {
        match a {
            IpAddr::V4(a) => list.set(i as u32, &a.octets()),
            IpAddr::V6(a) => list.set(i as u32, &a.octets()),
        }
    }
    let frame = packet(sources[0]);
    let wrap = |target: BorrowedFd<'_>| -> Result<(OwnedFd, OwnedFd, OwnedFd)> {
        let arr = bpf::map_create(bpf::BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 1, 0)?;
        bpf::map_update(
            arr.as_fd(),
            &0u32.to_ne_bytes(),
            &(target.as_raw_fd() as u32).to_ne_bytes(),
        )?;
        let cursor = bpf::map_create(bpf::BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0)?;
        let prog = bpf::load_cycler(
            cursor.as_fd(),
            list.fd.as_fd(),
            sources.len() as u32,
            arr.as_fd(),
            v6,
        )?;
        Ok((prog, arr, cursor))
    };
    let f2x = wrap(ours.prog(PROG_NAME)?)?;
    let triv = wrap(ours.prog("xdp_pass")?)?;
    measure(o, f2x.0.as_fd(), triv.0.as_fd(), &frame, want)
}

/// Cache lines of table the XDP program reads, surveyed over 65,536 clean
/// sources other than the measured one (scattered over 10.128.0.0/9 and
/// 2001:db8:dddd::/48, beyond the filled keys; only hashed, never sent) and
/// 65,536 of the bans: a clean source reads its bucket (one line) and,
/// only if the bucket's spill counter for its nibble says so, the second;
/// a banned one also its entry.
fn survey(ours: &Instance, n: u32) -> Result<String> {
    let clean4: Vec<IpAddr> = (0..65_536u32)
        .map(|i| Ipv4Addr::from(0x0a80_0000u32 | i.wrapping_mul(0x9e37_79b1) >> 9).into())
        .collect();
    let clean6: Vec<IpAddr> = (0..65_536u32)
        .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0xdddd, 0, 0, 0, (i >> 16) as u16, i as u16).into())
        .collect();
    let step = (n / 65_536).max(1);
    let banned4: Vec<IpAddr> = (1..n)
        .step_by(step as usize)
        .map(|i| inert_v4(i).into())
        .collect();
    let banned6: Vec<IpAddr> = (1..n)
        .step_by(step as usize)
        .map(|i| inert_v6(i).into())
        .collect();
    let share = |addrs: &[IpAddr], want_banned: bool| -> Result<(f64, usize)> {
        let c = ours.enforcer.lookup_costs(addrs)?;
        let wrong = c.iter().filter(|x| x.banned != want_banned).count();
        let two = c.iter().filter(|x| x.buckets > 1).count();
        Ok((100.0 * two as f64 / c.len().max(1) as f64, wrong))
    };
    let (c4, w1) = share(&clean4, false)?;
    let (c6, w2) = share(&clean6, false)?;
    let (b4, w3) = share(&banned4, true)?;
    let (b6, w4) = share(&banned6, true)?;
    if w1 + w2 + w3 + w4 > 0 {
        bail!("the survey found wrong answers ({w1}, {w2}, {w3}, {w4}): the table is corrupt");
    }
    Ok(format!(
        "At {} bans per family: clean sources reading a second bucket: IPv4 {c4:.2} %, IPv6 \
         {c6:.2} % (the rest one cache line); bans in their second bucket: IPv4 {b4:.2} %, \
         IPv6 {b6:.2} % (the rest one bucket line plus the entry line).",
        thousands(n)
    ))
}

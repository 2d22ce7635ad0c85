//! The XDP program judged frame by frame through BPF_PROG_TEST_RUN.
//!
//! Each test has its own [`Instance`]: the real enforcer writes bans and
//! the allowlist into maps pinned in a private pin dir, and the object's
//! programs run hand-built frames (the harness's builders) against them.
//! Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON); without it every test
//! fails with what is missing, never skips.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
    time::Duration,
};

use fail2xdp::enforcer::{BanInfo, BanRequest, IpNet, PortSet, WriteMode};
use fail2xdp_common::{
    BUCKET_SLOTS, Config, LEN_UNUSED, LenSlotV4, LenSlotV6, PROG_NAME, Stats, TBL_BANS_V4,
    TBL_BANS_V6, addr_words, hash_v4, hash_v6, map, place,
};
use fail2xdp_tests::{
    Instance, bpf,
    packet::{
        ETH_P_8021AD as TPID_8021AD, ETH_P_8021Q as TPID_8021Q, ETH_P_ARP as ETH_ARP,
        ETH_P_IP as ETH_IPV4, ETH_P_IPV6 as ETH_IPV6, ETH_P_QINQ_9100 as TPID_9100,
        IPPROTO_AH as NH_AH, IPPROTO_DSTOPTS as NH_DSTOPTS, IPPROTO_FRAGMENT as NH_FRAGMENT,
        IPPROTO_HOPOPTS as NH_HOPOPTS, IPPROTO_ICMP as ICMP, IPPROTO_NONE as NH_NONE,
        IPPROTO_ROUTING as NH_ROUTING, IPPROTO_TCP as TCP, IPPROTO_UDP as UDP,
        raw::{ah_hdr, eth, frag_hdr, ipv4, ipv6, opt_hdr, tcp, udp},
    },
    rng, small_capacities,
};

const XDP_DROP: u32 = bpf::XDP_DROP;
const XDP_PASS: u32 = bpf::XDP_PASS;

// Documentation addresses only.
const V4_BANNED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
const V4_CLEAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const V4_NET_BANNED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);
const V4_IN_NET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
const V4_OUTSIDE_NET: Ipv4Addr = Ipv4Addr::new(198, 51, 101, 77);
const V4_PORTS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 25);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("test address")
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Ban tables of a test instance hold this many entries unless a test asks
/// for more (arrays are preallocated: keep parallel tests small).
const TEST_CAPACITY: u32 = 4096;

/// One private instance of the data plane.
struct Dp {
    inst: Instance,
}

/// How long a test ban lasts and which ports it covers.
#[derive(Clone, Copy)]
struct Spec {
    ttl: Option<Duration>,
    ports: &'static [u16],
}

fn permanent() -> Spec {
    Spec {
        ttl: None,
        ports: &[],
    }
}

fn on_ports(ports: &'static [u16]) -> Spec {
    Spec { ttl: None, ports }
}

/// A ban whose time is already up when the test sends its frames.
fn ran_out() -> Spec {
    Spec {
        ttl: Some(Duration::from_nanos(1)),
        ports: &[],
    }
}

fn for_an_hour() -> Spec {
    Spec {
        ttl: Some(Duration::from_secs(3600)),
        ports: &[],
    }
}

fn net(addr: IpAddr, len: u32) -> IpNet {
    IpNet::new(addr, len as u8)
        .expect("test prefix length")
        .trunc()
}

impl Dp {
    fn new() -> Self {
        Self::with_capacity(TEST_CAPACITY)
    }

    fn with_capacity(cap: u32) -> Self {
        let inst = Instance::new(&small_capacities(cap))
            .unwrap_or_else(|e| panic!("setting up a test instance: {e:#}"));
        Dp { inst }
    }

    fn write(&mut self, n: IpNet, s: Spec) {
        let req = BanRequest {
            net: n,
            ttl: s.ttl,
            ports: PortSet::from_ports(s.ports.to_vec()).expect("test ports"),
            jail: "manual".into(),
            mode: WriteMode::Replace,
        };
        self.inst
            .enforcer
            .ban(&req)
            .unwrap_or_else(|e| panic!("banning {n}: {e:#}"));
        if s.ttl.is_some_and(|t| t < Duration::from_millis(1)) {
            // Past its end (rounded up by at most 65.5 µs) before any frame.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn ban(&mut self, addr: IpAddr, s: Spec) {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        self.write(net(addr, len), s);
    }

    fn ban_prefix(&mut self, addr: IpAddr, len: u32, s: Spec) {
        self.write(net(addr, len), s);
    }

    fn info(&self, n: IpNet) -> BanInfo {
        self.inst
            .enforcer
            .get(&n)
            .unwrap_or_else(|e| panic!("reading the ban on {n}: {e:#}"))
            .unwrap_or_else(|| panic!("no ban on {n}"))
    }

    fn exact(&self, addr: IpAddr) -> BanInfo {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        self.info(net(addr, len))
    }

    fn prefix(&self, addr: IpAddr, len: u32) -> BanInfo {
        self.info(net(addr, len))
    }

    fn allow(&mut self, addr: IpAddr, len: u32) {
        let n = net(addr, len);
        self.inst
            .enforcer
            .allow_add(&n)
            .unwrap_or_else(|e| panic!("allowlisting {n}: {e:#}"));
    }

    fn config(&self) -> Config {
        self.inst.config().expect("reading CONFIG")
    }

    /// Puts `count` free (LEN_UNUSED) slots in front of every length table,
    /// as after an unban freed the longest lengths: the program must skip
    /// them, not stop there.
    fn add_free_slots(&mut self, count: u32) {
        let mut c = self.config();
        fn shift<T: Copy>(slots: &mut [T], n: &mut u32, count: u32, free: T) {
            let used = *n as usize;
            let k = count as usize;
            slots.copy_within(0..used, k);
            for s in &mut slots[..k] {
                *s = free;
            }
            *n += count;
        }
        let f4 = LenSlotV4 {
            len: LEN_UNUSED,
            mask: [0; 4],
            mark: [0; 4],
        };
        let f6 = LenSlotV6 {
            len: LEN_UNUSED,
            _pad: 0,
            mask: [0; 2],
        };
        shift(&mut c.pfx_v4, &mut c.pfx_v4_n, count, f4);
        shift(&mut c.allow_v4, &mut c.allow_v4_n, count, f4);
        shift(&mut c.pfx_v6, &mut c.pfx_v6_n, count, f6);
        shift(&mut c.allow_v6, &mut c.allow_v6_n, count, f6);
        self.inst.set_config(c).expect("writing CONFIG");
    }

    fn try_run_n(&self, name: &str, frame: &[u8], repeat: u32) -> anyhow::Result<u32> {
        Ok(self.inst.run_n(name, frame, repeat)?.0)
    }

    fn run_n(&self, frame: &[u8], repeat: u32) -> u32 {
        self.try_run_n(PROG_NAME, frame, repeat)
            .unwrap_or_else(|e| panic!("test run of a {}-byte frame: {e:#}", frame.len()))
    }

    fn run(&self, frame: &[u8]) -> u32 {
        self.run_n(frame, 1)
    }

    fn stats(&mut self) -> Stats {
        self.inst.enforcer.stats().expect("reading STATS")
    }
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

fn v4_tcp(src: Ipv4Addr, dport: u16) -> Vec<u8> {
    eth(&[], ETH_IPV4, &ipv4(src, TCP, &[], 0, &tcp(dport)))
}

fn v4_udp(src: Ipv4Addr, dport: u16) -> Vec<u8> {
    eth(&[], ETH_IPV4, &ipv4(src, UDP, &[], 0, &udp(dport)))
}

fn v6_tcp(src: Ipv6Addr, dport: u16) -> Vec<u8> {
    eth(&[], ETH_IPV6, &ipv6(src, TCP, &tcp(dport)))
}

fn v6_udp(src: Ipv6Addr, dport: u16) -> Vec<u8> {
    eth(&[], ETH_IPV6, &ipv6(src, UDP, &udp(dport)))
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_DROP => "DROP",
        XDP_PASS => "PASS",
        0 => "ABORTED",
        _ => "other",
    }
}

#[track_caller]
fn expect(dp: &Dp, frame: &[u8], want: u32, what: &str) {
    let got = dp.run(frame);
    assert_eq!(
        got,
        want,
        "{what}: want {} got {}",
        verdict_name(want),
        verdict_name(got)
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn object_has_every_contract_map_and_both_programs() {
    let dp = Dp::new();
    for name in map::ALL {
        assert!(dp.inst.has_map(name), "map {name} missing");
    }
    assert_eq!(dp.inst.programs(), ["fail2xdp", "xdp_pass"]);
    let f = v4_tcp(V4_CLEAN, 25);
    assert_eq!(
        dp.try_run_n("xdp_pass", &f, 1).expect("run xdp_pass"),
        XDP_PASS
    );
}

#[test]
fn exact_v4_ban_drops_clean_passes() {
    let mut dp = Dp::new();
    expect(&dp, &v4_tcp(V4_BANNED, 25), XDP_PASS, "empty tables");
    dp.ban(V4_BANNED.into(), permanent());
    expect(&dp, &v4_tcp(V4_BANNED, 25), XDP_DROP, "banned tcp/25");
    expect(&dp, &v4_udp(V4_BANNED, 53), XDP_DROP, "banned udp/53");
    let icmp = eth(
        &[],
        ETH_IPV4,
        &ipv4(V4_BANNED, ICMP, &[], 0, &[8, 0, 0, 0, 0, 0, 0, 0]),
    );
    expect(&dp, &icmp, XDP_DROP, "banned icmp");
    expect(&dp, &v4_tcp(V4_CLEAN, 25), XDP_PASS, "clean");
    // A neighbour one bit away is not banned by an exact entry.
    expect(
        &dp,
        &v4_tcp(Ipv4Addr::new(192, 0, 2, 67), 25),
        XDP_PASS,
        "neighbour",
    );
}

#[test]
fn exact_v6_ban_drops_clean_passes() {
    let mut dp = Dp::new();
    let banned = v6("2001:db8:1::66");
    expect(&dp, &v6_tcp(banned, 25), XDP_PASS, "empty tables");
    dp.ban(banned.into(), permanent());
    expect(&dp, &v6_tcp(banned, 25), XDP_DROP, "banned tcp/25");
    expect(&dp, &v6_udp(banned, 443), XDP_DROP, "banned udp/443");
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:1::67"), 25),
        XDP_PASS,
        "neighbour",
    );
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:2::66"), 25),
        XDP_PASS,
        "other /48",
    );
}

#[test]
fn prefix_v4_ban_covers_its_network_only() {
    let mut dp = Dp::new();
    dp.ban_prefix(V4_NET_BANNED.into(), 24, permanent());
    // A free slot before the real one: it must be skipped, not end the probe.
    dp.add_free_slots(1);
    expect(&dp, &v4_tcp(V4_IN_NET, 25), XDP_DROP, "inside /24");
    expect(
        &dp,
        &v4_tcp(Ipv4Addr::new(198, 51, 100, 255), 80),
        XDP_DROP,
        "last of /24",
    );
    expect(&dp, &v4_tcp(V4_OUTSIDE_NET, 25), XDP_PASS, "outside /24");
    // A second length in another slot.
    dp.ban_prefix(Ipv4Addr::new(203, 0, 112, 0).into(), 23, permanent());
    expect(
        &dp,
        &v4_tcp(Ipv4Addr::new(203, 0, 113, 9), 25),
        XDP_DROP,
        "inside /23",
    );
    expect(
        &dp,
        &v4_tcp(Ipv4Addr::new(203, 0, 114, 9), 25),
        XDP_PASS,
        "outside /23",
    );
    expect(&dp, &v4_tcp(V4_IN_NET, 25), XDP_DROP, "inside /24 still");
    assert_eq!(dp.prefix(V4_NET_BANNED.into(), 24).drops, 3);
    let s = dp.stats();
    assert_eq!((s.drop_prefix_v4, s.drop_exact_v4), (4, 0));
}

#[test]
fn prefix_v6_ban_covers_its_network_only() {
    let mut dp = Dp::new();
    dp.ban_prefix(v6("2001:db8:aa::").into(), 48, permanent());
    dp.ban_prefix(v6("2001:db8:bb:cc::").into(), 64, permanent());
    dp.ban_prefix(v6("2001:db8:cc::40").into(), 122, permanent());
    dp.add_free_slots(2);
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:aa:ffff::1"), 25),
        XDP_DROP,
        "inside /48",
    );
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:ab::1"), 25),
        XDP_PASS,
        "outside /48",
    );
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:bb:cc:1:2:3:4"), 25),
        XDP_DROP,
        "inside /64",
    );
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:bb:cd::1"), 25),
        XDP_PASS,
        "outside /64",
    );
    // The mask crosses into the second 64-bit word.
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:cc::7f"), 25),
        XDP_DROP,
        "inside /122",
    );
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:cc::80"), 25),
        XDP_PASS,
        "outside /122",
    );
    let s = dp.stats();
    assert_eq!((s.drop_prefix_v6, s.drop_exact_v6), (3, 0));
}

#[test]
fn port_scoped_ban_drops_listed_ports_only() {
    let mut dp = Dp::new();
    let ports = on_ports(&[25, 465, 587]);
    dp.ban(V4_PORTS.into(), ports);
    let b6 = v6("2001:db8::25");
    dp.ban(b6.into(), ports);
    for port in [25, 465, 587] {
        expect(
            &dp,
            &v4_tcp(V4_PORTS, port),
            XDP_DROP,
            &format!("v4 tcp/{port}"),
        );
        expect(
            &dp,
            &v4_udp(V4_PORTS, port),
            XDP_DROP,
            &format!("v4 udp/{port}"),
        );
        expect(&dp, &v6_tcp(b6, port), XDP_DROP, &format!("v6 tcp/{port}"));
    }
    for port in [80, 443, 24, 26, 0] {
        expect(
            &dp,
            &v4_tcp(V4_PORTS, port),
            XDP_PASS,
            &format!("v4 tcp/{port}"),
        );
        expect(&dp, &v6_udp(b6, port), XDP_PASS, &format!("v6 udp/{port}"));
    }
    // No port at all: ICMP is not covered by a port-scoped ban.
    let icmp = eth(
        &[],
        ETH_IPV4,
        &ipv4(V4_PORTS, ICMP, &[], 0, &[8, 0, 0, 0, 0, 0, 0, 0]),
    );
    expect(&dp, &icmp, XDP_PASS, "v4 icmp");
    // All eight ports of a set are honoured, and a port a set lacks is not.
    dp.ban(V4_BANNED.into(), on_ports(&[1, 2, 3, 4, 5, 6, 7, 8]));
    expect(&dp, &v4_tcp(V4_BANNED, 8), XDP_DROP, "8th port");
    dp.ban(V4_BANNED.into(), on_ports(&[1, 2, 3, 4, 5, 6, 7]));
    expect(
        &dp,
        &v4_tcp(V4_BANNED, 8),
        XDP_PASS,
        "port no longer in the set",
    );
    let s = dp.stats();
    assert_eq!(s.drop_exact_v4, 7);
    assert_eq!(s.drop_exact_v6, 3);
    assert_eq!(s.pass_other_port, 5 + 5 + 1 + 1);
}

#[test]
fn port_scoped_prefix_ban() {
    let mut dp = Dp::new();
    dp.ban_prefix(V4_NET_BANNED.into(), 24, on_ports(&[25]));
    dp.ban_prefix(v6("2001:db8:aa::").into(), 48, on_ports(&[587]));
    expect(&dp, &v4_tcp(V4_IN_NET, 25), XDP_DROP, "v4 /24 port 25");
    expect(&dp, &v4_tcp(V4_IN_NET, 80), XDP_PASS, "v4 /24 port 80");
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:aa::1"), 587),
        XDP_DROP,
        "v6 /48 port 587",
    );
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:aa::1"), 25),
        XDP_PASS,
        "v6 /48 port 25",
    );
}

#[test]
fn vlan_tags_single_and_double() {
    let mut dp = Dp::new();
    dp.ban(V4_PORTS.into(), on_ports(&[25]));
    let b6 = v6("2001:db8::25");
    dp.ban(b6.into(), on_ports(&[25]));
    let ip4 = |port| ipv4(V4_PORTS, TCP, &[], 0, &tcp(port));
    let ip6 = |port| ipv6(b6, TCP, &tcp(port));
    for tags in [
        &[TPID_8021Q][..],
        &[TPID_8021AD],
        &[TPID_9100],
        &[TPID_8021AD, TPID_8021Q],
        &[TPID_8021Q, TPID_8021Q],
        &[TPID_9100, TPID_8021Q],
    ] {
        expect(
            &dp,
            &eth(tags, ETH_IPV4, &ip4(25)),
            XDP_DROP,
            &format!("{tags:x?} v4/25"),
        );
        expect(
            &dp,
            &eth(tags, ETH_IPV4, &ip4(80)),
            XDP_PASS,
            &format!("{tags:x?} v4/80"),
        );
        expect(
            &dp,
            &eth(tags, ETH_IPV6, &ip6(25)),
            XDP_DROP,
            &format!("{tags:x?} v6/25"),
        );
        expect(
            &dp,
            &eth(tags, ETH_IPV6, &ip6(80)),
            XDP_PASS,
            &format!("{tags:x?} v6/80"),
        );
    }
    // A third tag is beyond what the parser reads: passed as unparsed.
    let before = dp.stats().pass_unparsed;
    let triple = eth(&[TPID_8021AD, TPID_8021Q, TPID_8021Q], ETH_IPV4, &ip4(25));
    expect(&dp, &triple, XDP_PASS, "three tags");
    assert_eq!(dp.stats().pass_unparsed, before + 1);
}

#[test]
fn ipv4_options_are_skipped_to_find_the_port() {
    let mut dp = Dp::new();
    dp.ban(V4_PORTS.into(), on_ports(&[25]));
    for words in 1..=10 {
        // NOPs then an end-of-options byte, any content must be skipped.
        let mut opts = vec![1u8; words * 4];
        opts[words * 4 - 1] = 0;
        let f = |port| eth(&[], ETH_IPV4, &ipv4(V4_PORTS, TCP, &opts, 0, &tcp(port)));
        expect(&dp, &f(25), XDP_DROP, &format!("IHL {} port 25", 5 + words));
        expect(&dp, &f(80), XDP_PASS, &format!("IHL {} port 80", 5 + words));
        // Options that happen to hold "port 25" where IHL=5 would look.
        let mut trap = tcp(80);
        trap[2..4].copy_from_slice(&25u16.to_be_bytes());
        let mut opts_trap = opts.clone();
        opts_trap[..4].copy_from_slice(&trap[..4]);
        let f = eth(&[], ETH_IPV4, &ipv4(V4_PORTS, TCP, &opts_trap, 0, &tcp(80)));
        expect(
            &dp,
            &f,
            XDP_PASS,
            &format!("IHL {} options look like port 25", 5 + words),
        );
    }
}

#[test]
fn ipv4_fragments() {
    let mut dp = Dp::new();
    dp.ban(V4_PORTS.into(), on_ports(&[25]));
    dp.ban(V4_BANNED.into(), permanent());
    let first = |src| eth(&[], ETH_IPV4, &ipv4(src, TCP, &[], 0x2000, &tcp(25)));
    // Offset 185*8: the "TCP header" bytes are payload and must not be read.
    let later = |src| eth(&[], ETH_IPV4, &ipv4(src, TCP, &[], 0x2000 | 185, &tcp(25)));
    let last = |src| eth(&[], ETH_IPV4, &ipv4(src, TCP, &[], 185, &tcp(25)));
    expect(&dp, &first(V4_PORTS), XDP_DROP, "first fragment, port ban");
    expect(&dp, &later(V4_PORTS), XDP_PASS, "middle fragment, port ban");
    expect(&dp, &last(V4_PORTS), XDP_PASS, "last fragment, port ban");
    expect(
        &dp,
        &later(V4_BANNED),
        XDP_DROP,
        "middle fragment, all-port ban",
    );
    expect(
        &dp,
        &last(V4_BANNED),
        XDP_DROP,
        "last fragment, all-port ban",
    );
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let mut dp = Dp::new();
    let b6 = v6("2001:db8::25");
    dp.ban(b6.into(), on_ports(&[25]));
    let chains: Vec<(&str, u8, Vec<u8>, u32)> = vec![
        ("hop-by-hop", NH_HOPOPTS, cat(&[&opt_hdr(TCP, 0)]), XDP_DROP),
        (
            "hop-by-hop long",
            NH_HOPOPTS,
            cat(&[&opt_hdr(TCP, 3)]),
            XDP_DROP,
        ),
        ("routing", NH_ROUTING, cat(&[&opt_hdr(TCP, 2)]), XDP_DROP),
        ("dest-opts", NH_DSTOPTS, cat(&[&opt_hdr(TCP, 1)]), XDP_DROP),
        ("AH", NH_AH, cat(&[&ah_hdr(TCP, 4)]), XDP_DROP),
        (
            "first fragment",
            NH_FRAGMENT,
            cat(&[&frag_hdr(TCP, 0, true)]),
            XDP_DROP,
        ),
        (
            "later fragment",
            NH_FRAGMENT,
            cat(&[&frag_hdr(TCP, 100, true)]),
            XDP_PASS,
        ),
        (
            "hbh+dst+rt+frag+ah+dst",
            NH_HOPOPTS,
            cat(&[
                &opt_hdr(NH_DSTOPTS, 0),
                &opt_hdr(NH_ROUTING, 1),
                &opt_hdr(NH_FRAGMENT, 0),
                &frag_hdr(NH_AH, 0, false),
                &ah_hdr(NH_DSTOPTS, 1),
                &opt_hdr(TCP, 0),
            ]),
            XDP_DROP,
        ),
        (
            "seven headers: beyond the walk",
            NH_DSTOPTS,
            cat(&[
                &opt_hdr(NH_DSTOPTS, 0),
                &opt_hdr(NH_DSTOPTS, 0),
                &opt_hdr(NH_DSTOPTS, 0),
                &opt_hdr(NH_DSTOPTS, 0),
                &opt_hdr(NH_DSTOPTS, 0),
                &opt_hdr(NH_DSTOPTS, 0),
                &opt_hdr(TCP, 0),
            ]),
            XDP_PASS,
        ),
        ("no next header", NH_NONE, vec![], XDP_PASS),
    ];
    for (what, first, ext, want) in &chains {
        let f = eth(&[], ETH_IPV6, &ipv6(b6, *first, &cat(&[ext, &tcp(25)])));
        expect(&dp, &f, *want, what);
        // The same chain to port 80 never drops.
        let f = eth(&[], ETH_IPV6, &ipv6(b6, *first, &cat(&[ext, &tcp(80)])));
        expect(&dp, &f, XDP_PASS, &format!("{what}, port 80"));
        // UDP behind the same chain.
        let mut ext_udp = ext.clone();
        relink_last(&mut ext_udp, *first, UDP);
        let f = eth(
            &[],
            ETH_IPV6,
            &ipv6(b6, *first, &cat(&[&ext_udp, &udp(25)])),
        );
        expect(&dp, &f, *want, &format!("{what}, udp"));
    }
}

/// Rewrites the final "next header" of an extension chain (which points at
/// TCP) to `to`. Walks the same lengths the program does.
fn relink_last(chain: &mut [u8], first: u8, to: u8) {
    let mut next = first;
    let mut off = 0;
    let mut last_nh_at = None;
    while off < chain.len() {
        let len = match next {
            NH_HOPOPTS | NH_ROUTING | NH_DSTOPTS => (chain[off + 1] as usize + 1) * 8,
            NH_AH => (chain[off + 1] as usize + 2) * 4,
            NH_FRAGMENT => 8,
            _ => break,
        };
        last_nh_at = Some(off);
        next = chain[off];
        off += len;
    }
    if let Some(at) = last_nh_at
        && chain[at] == TCP
    {
        chain[at] = to;
    }
}

#[test]
fn expired_ban_passes() {
    let mut dp = Dp::new();
    let expired = ran_out();
    let live = for_an_hour();
    dp.ban(V4_BANNED.into(), expired);
    dp.ban(V4_CLEAN.into(), live);
    let b6 = v6("2001:db8::dead");
    dp.ban(b6.into(), expired);
    dp.ban_prefix(V4_NET_BANNED.into(), 24, expired);
    expect(&dp, &v4_tcp(V4_BANNED, 25), XDP_PASS, "expired exact v4");
    expect(&dp, &v6_tcp(b6, 25), XDP_PASS, "expired exact v6");
    expect(&dp, &v4_tcp(V4_IN_NET, 25), XDP_PASS, "expired prefix v4");
    expect(&dp, &v4_tcp(V4_CLEAN, 25), XDP_DROP, "unexpired exact v4");
    let s = dp.stats();
    assert_eq!(s.pass_expired, 3);
    assert_eq!(dp.exact(V4_BANNED.into()).drops, 0);

    // An expired exact ban does not hide a live prefix ban over it.
    let in_net = Ipv4Addr::new(203, 0, 113, 99);
    dp.ban(in_net.into(), expired);
    dp.ban_prefix(Ipv4Addr::new(203, 0, 113, 0).into(), 24, live);
    expect(
        &dp,
        &v4_tcp(in_net, 25),
        XDP_DROP,
        "expired exact, live prefix",
    );
}

#[test]
fn allowlist_beats_bans() {
    let mut dp = Dp::new();
    let trusted = Ipv4Addr::new(198, 51, 100, 10);
    dp.ban_prefix(V4_NET_BANNED.into(), 24, permanent());
    dp.ban(trusted.into(), permanent());
    expect(&dp, &v4_tcp(trusted, 25), XDP_DROP, "before allowlisting");
    dp.allow(trusted.into(), 32);
    dp.add_free_slots(1);
    expect(
        &dp,
        &v4_tcp(trusted, 25),
        XDP_PASS,
        "allowlisted /32 in banned /24",
    );
    expect(&dp, &v4_tcp(V4_IN_NET, 25), XDP_DROP, "rest of the /24");
    // An allowlisted network covers exact bans inside it.
    let office = v6("2001:db8:0:5::");
    let host = v6("2001:db8:0:5::77");
    dp.ban(host.into(), permanent());
    dp.ban_prefix(v6("2001:db8::").into(), 32, permanent());
    expect(&dp, &v6_tcp(host, 25), XDP_DROP, "before allowlisting v6");
    dp.allow(office.into(), 64);
    expect(&dp, &v6_tcp(host, 25), XDP_PASS, "allowlisted /64");
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:0:6::77"), 25),
        XDP_DROP,
        "next /64",
    );
    assert_eq!(dp.stats().pass_allowlisted, 2);
    assert_eq!(
        dp.exact(trusted.into()).drops,
        1,
        "allowlisted packets are not counted on the ban"
    );
}

#[test]
fn per_ban_drop_counter() {
    let mut dp = Dp::new();
    dp.ban(V4_BANNED.into(), permanent());
    dp.ban_prefix(v6("2001:db8:aa::").into(), 48, permanent());
    assert_eq!(dp.run_n(&v4_tcp(V4_BANNED, 25), 7), XDP_DROP);
    assert_eq!(dp.exact(V4_BANNED.into()).drops, 7);
    expect(&dp, &v4_tcp(V4_BANNED, 25), XDP_DROP, "once more");
    assert_eq!(dp.exact(V4_BANNED.into()).drops, 8);
    assert_eq!(dp.run_n(&v6_tcp(v6("2001:db8:aa::9"), 25), 3), XDP_DROP);
    assert_eq!(dp.prefix(v6("2001:db8:aa::").into(), 48).drops, 3);
    // The rest of the ban is left alone.
    let v = dp.exact(V4_BANNED.into());
    assert_eq!(
        (v.remaining, v.ports.is_all(), v.jail.as_str()),
        (None, true, "manual")
    );
}

#[test]
fn stats_count_every_packet_once() {
    let mut dp = Dp::new();
    dp.ban(V4_BANNED.into(), permanent());
    dp.ban(v6("2001:db8::66").into(), permanent());
    dp.ban_prefix(V4_NET_BANNED.into(), 24, permanent());
    dp.ban_prefix(v6("2001:db8:aa::").into(), 48, permanent());
    dp.ban(V4_PORTS.into(), on_ports(&[25]));
    let expired = ran_out();
    dp.ban(Ipv4Addr::new(203, 0, 113, 200).into(), expired);
    dp.allow(Ipv4Addr::new(198, 51, 100, 10).into(), 32);

    let mut want = Stats::default();
    let pass = |dp: &Dp, f: Vec<u8>, n: u32, w: &mut Stats| {
        assert_eq!(dp.run_n(&f, n), XDP_PASS);
        w.pass_pkts += u64::from(n);
        w.pass_bytes += u64::from(n) * f.len() as u64;
    };
    pass(&dp, v4_tcp(V4_CLEAN, 25), 3, &mut want);
    pass(&dp, eth(&[], ETH_ARP, &[0u8; 28]), 1, &mut want);
    pass(
        &dp,
        v4_tcp(Ipv4Addr::new(198, 51, 100, 10), 25),
        2,
        &mut want,
    );
    want.pass_allowlisted += 2;
    pass(
        &dp,
        v4_tcp(Ipv4Addr::new(203, 0, 113, 200), 25),
        1,
        &mut want,
    );
    want.pass_expired += 1;
    pass(&dp, v4_tcp(V4_PORTS, 80), 4, &mut want);
    want.pass_other_port += 4;
    let mut bad_ihl = v4_tcp(V4_BANNED, 25);
    bad_ihl[14] = 0x43;
    pass(&dp, bad_ihl, 1, &mut want);
    want.pass_unparsed += 1;

    let dropped = |dp: &Dp, f: Vec<u8>, n: u32, w: &mut Stats| {
        assert_eq!(dp.run_n(&f, n), XDP_DROP);
        w.drop_pkts += u64::from(n);
        w.drop_bytes += u64::from(n) * f.len() as u64;
    };
    dropped(&dp, v4_tcp(V4_BANNED, 25), 2, &mut want);
    want.drop_exact_v4 += 2;
    dropped(&dp, v6_udp(v6("2001:db8::66"), 53), 1, &mut want);
    want.drop_exact_v6 += 1;
    dropped(&dp, v4_udp(V4_IN_NET, 53), 5, &mut want);
    want.drop_prefix_v4 += 5;
    dropped(&dp, v6_tcp(v6("2001:db8:aa::1"), 25), 1, &mut want);
    want.drop_prefix_v6 += 1;
    dropped(&dp, v4_tcp(V4_PORTS, 25), 1, &mut want);
    want.drop_exact_v4 += 1;

    assert_eq!(dp.stats(), want);
}

/// Frames cut at every length: each must come back PASS until the part
/// that decides a drop is complete, and the kernel must never abort.
#[test]
fn truncated_frames_pass_until_complete() {
    let mut dp = Dp::new();
    let port_ban = on_ports(&[25]);
    dp.ban(V4_PORTS.into(), port_ban);
    dp.ban(V4_BANNED.into(), permanent());
    let p6 = v6("2001:db8::25");
    let a6 = v6("2001:db8::66");
    dp.ban(p6.into(), port_ban);
    dp.ban(a6.into(), permanent());
    let ext = cat(&[&opt_hdr(NH_FRAGMENT, 0), &frag_hdr(TCP, 0, false)]);
    let ext_udp = cat(&[&opt_hdr(NH_FRAGMENT, 0), &frag_hdr(UDP, 0, false)]);

    // (frame, bytes needed for the source address, bytes needed for a drop)
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("v4 port ban", v4_tcp(V4_PORTS, 25), 14 + 20 + 20),
        ("v4 all ports", v4_tcp(V4_BANNED, 25), 14 + 20),
        ("v4 udp port ban", v4_udp(V4_PORTS, 25), 14 + 20 + 8),
        (
            "v4 options port ban",
            eth(&[], ETH_IPV4, &ipv4(V4_PORTS, TCP, &[1; 8], 0, &tcp(25))),
            14 + 28 + 20,
        ),
        (
            "qinq v4 port ban",
            eth(
                &[TPID_8021AD, TPID_8021Q],
                ETH_IPV4,
                &ipv4(V4_PORTS, TCP, &[], 0, &tcp(25)),
            ),
            22 + 20 + 20,
        ),
        (
            "qinq v4 all ports",
            eth(
                &[TPID_8021AD, TPID_8021Q],
                ETH_IPV4,
                &ipv4(V4_BANNED, TCP, &[], 0, &tcp(25)),
            ),
            22 + 20,
        ),
        ("v6 port ban", v6_tcp(p6, 25), 14 + 40 + 20),
        ("v6 all ports", v6_tcp(a6, 25), 14 + 40),
        (
            "v6 ext port ban",
            eth(
                &[],
                ETH_IPV6,
                &ipv6(p6, NH_HOPOPTS, &cat(&[&ext, &tcp(25)])),
            ),
            14 + 40 + 16 + 20,
        ),
        (
            "vlan v6 ext udp port ban",
            eth(
                &[TPID_8021Q],
                ETH_IPV6,
                &ipv6(p6, NH_HOPOPTS, &cat(&[&ext_udp, &udp(25)])),
            ),
            18 + 40 + 16 + 8,
        ),
    ];
    for (what, full, needed) in &cases {
        assert_eq!(dp.run(full), XDP_DROP, "{what}: full frame");
        for len in 0..full.len() {
            let cut = &full[..len];
            match dp.try_run_n(PROG_NAME, cut, 1) {
                // The kernel refuses test input shorter than an Ethernet header.
                Err(_) if len < 14 => {}
                Err(e) => panic!("{what}: {len} bytes: test run failed: {e:?}"),
                Ok(v) if len < 14 => panic!("{what}: {len} bytes ran and returned {v}"),
                Ok(v) => {
                    let want = if len >= *needed { XDP_DROP } else { XDP_PASS };
                    assert_eq!(
                        v,
                        want,
                        "{what}: cut to {len} of {} bytes (drop needs {needed})",
                        full.len()
                    );
                }
            }
        }
    }
}

#[test]
fn malformed_headers_pass() {
    let mut dp = Dp::new();
    dp.ban(V4_PORTS.into(), on_ports(&[25]));
    dp.ban(V4_BANNED.into(), permanent());
    let p6 = v6("2001:db8::25");
    dp.ban(p6.into(), on_ports(&[25]));

    // IHL below 5 is not an IPv4 header: unparsed, even for a banned source.
    for ihl in 0..5u8 {
        for src in [V4_BANNED, V4_PORTS] {
            let mut f = v4_tcp(src, 25);
            f[14] = 0x40 | ihl;
            let before = dp.stats().pass_unparsed;
            expect(&dp, &f, XDP_PASS, &format!("IHL {ihl} from {src}"));
            assert_eq!(
                dp.stats().pass_unparsed,
                before + 1,
                "IHL {ihl} counted unparsed"
            );
        }
    }
    // Wrong version nibble under an IPv4/IPv6 ethertype.
    for (ethertype, version) in [
        (ETH_IPV4, 6u8),
        (ETH_IPV4, 0),
        (ETH_IPV6, 4),
        (ETH_IPV6, 15),
    ] {
        let mut f = if ethertype == ETH_IPV4 {
            v4_tcp(V4_BANNED, 25)
        } else {
            v6_tcp(p6, 25)
        };
        f[14] = (version << 4) | (f[14] & 0x0f);
        expect(
            &dp,
            &f,
            XDP_PASS,
            &format!("ethertype {ethertype:#x} version {version}"),
        );
    }
    // IHL pointing past the end of the frame: the port is unknown, so a
    // port-scoped ban passes it; the address itself was read fine.
    let mut f = v4_tcp(V4_PORTS, 25);
    f[14] = 0x4f;
    expect(&dp, &f, XDP_PASS, "IHL 15 past the end, port ban");
    let mut f = v4_tcp(V4_BANNED, 25);
    f[14] = 0x4f;
    expect(&dp, &f, XDP_DROP, "IHL 15 past the end, all-port ban");

    // IPv6 extension header lengths running past the frame.
    for (what, first, ext) in [
        ("hbh 255", NH_HOPOPTS, opt_hdr(TCP, 0)),
        ("routing 255", NH_ROUTING, opt_hdr(TCP, 0)),
        ("ah 255", NH_AH, ah_hdr(TCP, 0)),
    ] {
        let mut ext = ext;
        ext[1] = 255;
        ext.truncate(8);
        let f = eth(&[], ETH_IPV6, &ipv6(p6, first, &cat(&[&ext, &tcp(25)])));
        expect(&dp, &f, XDP_PASS, what);
    }
    // A hop-by-hop length that lands inside the TCP header reads a wrong
    // "port" only if that lies in the frame; here it lands past the end.
    let f = eth(
        &[],
        ETH_IPV6,
        &ipv6(p6, NH_HOPOPTS, &cat(&[&opt_hdr(TCP, 3)[..8], &tcp(25)])),
    );
    expect(&dp, &f, XDP_PASS, "hbh 3 over a short frame");
    // A fragment header cut in half.
    let f = eth(
        &[],
        ETH_IPV6,
        &ipv6(p6, NH_FRAGMENT, &frag_hdr(TCP, 0, false)[..4]),
    );
    expect(&dp, &f, XDP_PASS, "half a fragment header");
}

#[test]
fn garbage_frames_pass() {
    let mut dp = Dp::new();
    // Bans so the tables are not empty: garbage must not hit them.
    dp.ban(V4_BANNED.into(), permanent());
    dp.ban(v6("2001:db8::66").into(), permanent());
    dp.ban_prefix(V4_NET_BANNED.into(), 24, permanent());
    dp.ban_prefix(v6("2001:db8:aa::").into(), 48, permanent());
    dp.allow(Ipv4Addr::new(192, 0, 2, 200).into(), 32);
    let mut next = rng::below(0x9e37_79b9_7f4a_7c15);
    let mut rnd = move || next(u64::MAX);
    let ethertypes = [ETH_IPV4, ETH_IPV6, TPID_8021Q, TPID_8021AD, TPID_9100];
    let mut runs = 0u64;
    for i in 0..3000 {
        let len = 14 + (rnd() % 300) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        // Steer most frames into the IP and VLAN parsers.
        if i % 4 != 0 {
            let et = ethertypes[(rnd() % ethertypes.len() as u64) as usize];
            f[12..14].copy_from_slice(&et.to_be_bytes());
        }
        if i % 2 == 0 && len > 15 {
            f[14] = if rnd() % 2 == 0 { 0x40 } else { 0x60 } | (f[14] & 0x0f);
        }
        let v = dp.run(&f);
        assert_eq!(v, XDP_PASS, "garbage frame {i} ({len} bytes): {f:02x?}");
        runs += 1;
    }
    let s = dp.stats();
    assert_eq!((s.pass_pkts, s.drop_pkts), (runs, 0));
}

/// Per-packet budget against the trivial program in the same object, at
/// the table's capacity fill; timing-sensitive, so run by hand on a quiet
/// machine: `cargo test --release -p fail2xdp-tests --test testrun --
/// --ignored --nocapture` (`cargo xtask bench dataplane` measures the same
/// with more care).
#[test]
#[ignore = "timing; run with --ignored on a quiet machine"]
fn verdict_cost_within_budget() {
    const CAP: u32 = 1 << 20;
    const N: u32 = 1_000_000;
    let mut dp = Dp::with_capacity(CAP);
    // Keys from reserved 240.0.0.0/4: never sent, only the fill matters.
    let reqs: Vec<BanRequest> = (0..N - 1)
        .map(|i| Ipv4Addr::from(0xf000_0000u32 + i))
        .chain([V4_BANNED])
        .map(|a| BanRequest {
            net: net(a.into(), 32),
            ttl: None,
            ports: PortSet::all(),
            jail: "manual".into(),
            mode: WriteMode::Replace,
        })
        .collect();
    let t0 = std::time::Instant::now();
    dp.inst.enforcer.ban_batch(&reqs).expect("bulk ban");
    println!("{N} bans written in {:?}", t0.elapsed());
    let clean = v4_tcp(V4_CLEAN, 25);
    let banned = v4_tcp(V4_BANNED, 25);
    let time = |dp: &Dp, name: &str, f: &[u8]| -> f64 {
        (0..5)
            .map(|_| dp.inst.run_n(name, f, 1_000_000).expect("timed run").1 as f64)
            .fold(f64::MAX, f64::min)
    };
    let base = time(&dp, "xdp_pass", &clean);
    let c = time(&dp, PROG_NAME, &clean) - base;
    let d = time(&dp, PROG_NAME, &banned) - base;
    println!("trivial {base:.1} ns, {N} exact bans: clean +{c:.1} ns, banned +{d:.1} ns");
    // 10k /24 prefix bans: one length in use, the usual case.
    let reqs: Vec<BanRequest> = (0..10_000u32)
        .map(|i| BanRequest {
            net: net(Ipv4Addr::from(0xf800_0000u32 + (i << 8)).into(), 24),
            ttl: None,
            ports: PortSet::all(),
            jail: "manual".into(),
            mode: WriteMode::Replace,
        })
        .collect();
    dp.inst.enforcer.ban_batch(&reqs).expect("prefix bans");
    let p = time(&dp, PROG_NAME, &clean) - base;
    println!("+10k /24 prefix bans: clean +{p:.1} ns");
    assert!(c <= 15.0, "clean packet at capacity fill: +{c:.1} ns > 15");
    assert!(d <= 20.0, "banned packet at capacity fill: +{d:.1} ns > 20");
    assert!(
        p <= 60.0,
        "clean packet with 10k prefix bans: +{p:.1} ns > 60"
    );
}

/// Keys that share a first bucket fill it and go on to their second
/// buckets; when both of a key's buckets are full, residents move to their
/// other buckets to make room. The XDP program must find every key through
/// all of it, and removals must leave the others findable.
#[test]
fn crowded_buckets_spill_and_move_yet_every_key_is_found() {
    let mut dp = Dp::new();
    let g = dp.config().tables[TBL_BANS_V6];
    assert!(g.shape.buckets >= 2, "geometry set up");
    // Few keys: the table keeps its first shape throughout.
    let place_of = |a: &Ipv6Addr| {
        let (hi, lo) = addr_words(&a.octets());
        place(hash_v6(hi, lo, g.seed), g.shape)
    };
    let base = u128::from(v6("2001:db8:f00::"));
    let candidates = (0u128..4_000_000).map(|i| Ipv6Addr::from(base + i));
    // Twelve keys with one first bucket: seven fit there, five spill.
    let target = place_of(&Ipv6Addr::from(base)).b1;
    let same: Vec<Ipv6Addr> = candidates
        .clone()
        .filter(|a| place_of(a).b1 == target && place_of(a).b2 != target)
        .take(BUCKET_SLOTS + 5)
        .collect();
    assert_eq!(same.len(), BUCKET_SLOTS + 5, "found keys sharing a bucket");
    for a in &same {
        dp.ban((*a).into(), permanent());
    }
    // Then fill the second bucket of a last key homed there too, so both
    // of its buckets are full: residents must move for it.
    let last = candidates
        .clone()
        .skip_while(|a| !same.contains(a))
        .filter(|a| place_of(a).b1 == target && !same.contains(a))
        .find(|a| place_of(a).b2 != target)
        .expect("one more key for the crowded bucket");
    let second = place_of(&last).b2;
    let fillers: Vec<Ipv6Addr> = candidates
        .filter(|a| place_of(a).b1 == second)
        .take(BUCKET_SLOTS)
        .collect();
    for a in &fillers {
        dp.ban((*a).into(), permanent());
    }
    dp.ban(last.into(), permanent());
    let all: Vec<Ipv6Addr> = same.iter().chain(&fillers).copied().chain([last]).collect();
    for a in &all {
        expect(&dp, &v6_tcp(*a, 25), XDP_DROP, &format!("crowded {a}"));
    }
    // The ones that spilled are found in their second bucket (two lines
    // read), the rest in their first.
    let addrs: Vec<IpAddr> = all.iter().map(|a| (*a).into()).collect();
    let costs = dp.inst.enforcer.lookup_costs(&addrs).expect("lookup costs");
    assert!(costs.iter().all(|c| c.banned));
    let second = costs.iter().filter(|c| c.buckets == 2).count();
    assert!(second >= 5, "{second} keys in their second bucket");
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:f00::ffff:1"), 25),
        XDP_PASS,
        "clean",
    );
    assert_eq!(dp.config().tables[TBL_BANS_V6].count as usize, all.len());
    // Unban some in first buckets and some that spilled; the rest stay.
    let gone = [
        same[0],
        same[BUCKET_SLOTS],
        same[BUCKET_SLOTS + 3],
        fillers[2],
    ];
    for a in &gone {
        let n = net((*a).into(), 128);
        assert!(dp.inst.enforcer.unban(&n).expect("unban"), "{a} was there");
        assert!(!dp.inst.enforcer.unban(&n).expect("unban again"));
    }
    for a in &all {
        let want = if gone.contains(a) { XDP_PASS } else { XDP_DROP };
        expect(&dp, &v6_tcp(*a, 25), want, &format!("after unbans {a}"));
    }
    // A re-ban of a spilled key keeps its drops and changes its scope.
    let spilled = same[BUCKET_SLOTS + 1];
    let before = dp.exact(spilled.into()).drops;
    assert!(before >= 1);
    dp.ban(spilled.into(), on_ports(&[587]));
    let after = dp.exact(spilled.into());
    assert_eq!((after.ports, after.drops), (PortSet(vec![587]), before));
    expect(&dp, &v6_tcp(spilled, 25), XDP_PASS, "other port");
    expect(&dp, &v6_tcp(spilled, 587), XDP_DROP, "its port");
}

/// The same for IPv4, whose tags are the addresses themselves: a clean
/// address sharing a crowded first bucket is never taken for a banned one.
#[test]
fn crowded_ipv4_bucket_keeps_clean_neighbours_clean() {
    let mut dp = Dp::new();
    let g = dp.config().tables[TBL_BANS_V4];
    let place_of = |a: &Ipv4Addr| place(hash_v4(u32::from_ne_bytes(a.octets()), g.seed), g.shape);
    let base = u32::from(Ipv4Addr::new(203, 0, 113, 0));
    let target = place_of(&Ipv4Addr::from(base)).b1;
    let same: Vec<Ipv4Addr> = (0u32..2_000_000)
        .map(|i| Ipv4Addr::from(base.wrapping_add(i)))
        .filter(|a| place_of(a).b1 == target)
        .take(BUCKET_SLOTS + 4)
        .collect();
    let (banned, clean) = same.split_at(BUCKET_SLOTS + 2);
    for a in banned {
        dp.ban((*a).into(), permanent());
    }
    for a in banned {
        expect(&dp, &v4_tcp(*a, 25), XDP_DROP, &format!("banned {a}"));
    }
    for a in clean {
        expect(
            &dp,
            &v4_tcp(*a, 25),
            XDP_PASS,
            &format!("clean {a} in the same bucket"),
        );
    }
}

/// Runs `frames` through the program over and over on another thread,
/// each checked against the verdict it must get, while `work` runs;
/// returns how many frames ran and the first wrong verdicts.
fn watching(
    prog: std::os::fd::BorrowedFd<'_>,
    frames: &[(Vec<u8>, u32)],
    work: impl FnOnce(),
) -> (u64, Vec<String>) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let (mut runs, mut wrong) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, (f, want)) in frames.iter().enumerate() {
                    let got = bpf::test_run(prog, f, 1).expect("test run").0;
                    runs += 1;
                    if got != *want && wrong.len() < 10 {
                        wrong.push(format!("frame {i}: {}", verdict_name(got)));
                    }
                }
            }
            (runs, wrong)
        });
        work();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().expect("watcher thread")
    })
}

/// Sources and requests of the growth and shrink tests.
fn grow_v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i)
}

fn grow_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(0x2001_0db8_0077_u128 << 80 | u128::from(i))
}

fn grow_batch(from: u32, to: u32, ttl: Option<Duration>) -> Vec<BanRequest> {
    let req = |net: IpNet| BanRequest {
        net,
        ttl,
        ports: PortSet::all(),
        jail: "manual".into(),
        mode: WriteMode::Merge,
    };
    (from..to)
        .flat_map(|i| {
            [
                req(net(grow_v4(i).into(), 32)),
                req(net(grow_v6(i).into(), 128)),
            ]
        })
        .collect()
}

/// 64 banned sources per family (banned first, watched throughout) and
/// two clean ones, with the verdicts they must get.
fn sentinels() -> Vec<(Vec<u8>, u32)> {
    let mut f: Vec<(Vec<u8>, u32)> = (0..64)
        .flat_map(|i| {
            [
                (v4_tcp(grow_v4(i), 25), XDP_DROP),
                (v6_tcp(grow_v6(i), 25), XDP_DROP),
            ]
        })
        .collect();
    f.push((v4_tcp(V4_CLEAN, 25), XDP_PASS));
    f.push((v6_tcp(v6("2001:db8:ffff::1"), 25), XDP_PASS));
    f
}

/// A table grows (by linear hashing, in place) while the XDP program runs
/// on another CPU: keys banned before the growth must be dropped at every
/// moment of it, clean sources passed, and every key found afterwards.
#[test]
fn tables_grow_while_the_program_runs_and_never_lose_a_key() {
    const KEYS: u32 = 12_000;
    let mut dp = Dp::with_capacity(16_384);
    let first = dp.config().tables;
    let e = &mut dp.inst.enforcer;
    e.ban_batch(&grow_batch(0, 64, None)).expect("sentinels");
    let prog = dp.inst.prog(PROG_NAME).expect("program");
    let prog = prog.try_clone_to_owned().expect("fd");
    let (runs, wrong) = watching(prog.as_fd(), &sentinels(), || {
        // Batches of growing size: most of them make both tables grow.
        let mut at = 64;
        for n in [100, 200, 400, 800, 1600, 3200, 5636] {
            let e = &mut dp.inst.enforcer;
            e.ban_batch(&grow_batch(at, at + n, None)).expect("batch");
            at += n;
        }
        assert_eq!(at, KEYS);
    });
    assert!(wrong.is_empty(), "wrong verdicts during growth: {wrong:?}");
    assert!(runs > 1000, "the watcher ran {runs} frames only");
    let last = dp.config().tables;
    for t in [TBL_BANS_V4, TBL_BANS_V6] {
        assert_eq!(last[t].count, KEYS);
        assert!(
            last[t].shape.buckets > 8 * first[t].shape.buckets,
            "grew from {:?} to {:?}",
            first[t].shape,
            last[t].shape
        );
        // Entry ids were given lowest first: 1..=KEYS, no gaps.
        assert_eq!(last[t].next, KEYS + 1);
    }
    for i in (0..KEYS).step_by(7) {
        let (a, b) = (grow_v4(i), grow_v6(i));
        expect(&dp, &v4_tcp(a, 25), XDP_DROP, &format!("{a} after growth"));
        expect(&dp, &v6_tcp(b, 25), XDP_DROP, &format!("{b} after growth"));
    }
    for (f, want) in sentinels() {
        expect(&dp, &f, want, "after growth");
    }
}

/// Once most bans ended and were purged, the tables shrink back (the XDP
/// program running throughout), and the bans left are all still found.
#[test]
fn tables_shrink_when_bans_end_and_keep_the_rest() {
    const KEYS: u32 = 8_000;
    let mut dp = Dp::with_capacity(16_384);
    let first = dp.config().tables;
    let e = &mut dp.inst.enforcer;
    e.ban_batch(&grow_batch(0, 64, None)).expect("sentinels");
    let ttl = Duration::from_millis(500);
    e.ban_batch(&grow_batch(64, KEYS, Some(ttl))).expect("bulk");
    let grown = dp.config().tables;
    for t in [TBL_BANS_V4, TBL_BANS_V6] {
        assert!(grown[t].shape.buckets > 8 * first[t].shape.buckets);
    }
    std::thread::sleep(ttl + Duration::from_millis(100));
    let prog = dp.inst.prog(PROG_NAME).expect("program");
    let prog = prog.try_clone_to_owned().expect("fd");
    let (runs, wrong) = watching(prog.as_fd(), &sentinels(), || {
        let purged = dp.inst.enforcer.purge_expired().expect("purge");
        assert_eq!(purged, 2 * (KEYS - 64) as usize);
    });
    assert!(
        wrong.is_empty(),
        "wrong verdicts while shrinking: {wrong:?}"
    );
    assert!(runs > 100, "the watcher ran {runs} frames only");
    let last = dp.config().tables;
    for t in [TBL_BANS_V4, TBL_BANS_V6] {
        assert_eq!(last[t].count, 64);
        assert_eq!(last[t].shape, first[t].shape, "shrank back to the start");
    }
    for (f, want) in sentinels() {
        expect(&dp, &f, want, "after shrinking");
    }
    // Freed ids are given again lowest first.
    dp.ban(grow_v4(KEYS).into(), permanent());
    assert_eq!(dp.config().tables[TBL_BANS_V4].next, 66);
}

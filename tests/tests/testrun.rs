//! The XDP program judged frame by frame through BPF_PROG_TEST_RUN.
//!
//! Each test loads its own copy of the embedded object without pinning, so
//! the maps are private to the test; it fills them directly and runs hand
//! built frames through the verifier-accepted program. Needs root (CAP_BPF,
//! CAP_NET_ADMIN, CAP_PERFMON); without it every test fails, never skips.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf, EbpfLoader, TestRun, TestRunOptions,
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{ProgramError, Xdp},
};
use fail2xdp::enforcer::table::{BanTable, Slot, slots_for};
use fail2xdp_common::{
    AllowValue, BanValue, Config, EXPIRES_NEVER, LEN_UNUSED, LenSlotV4, LenSlotV6, PROG_NAME,
    PfxKeyV4, PfxKeyV6, SlotA4, SlotA6, SlotP4, SlotP6, SlotV4, SlotV6, Stats, TBL_ALLOW_V4,
    TBL_ALLOW_V6, TBL_BANS_V4, TBL_BANS_V6, TBL_PFX_V4, TBL_PFX_V6, map, mask_v4, mask_v6,
};
use std::os::fd::AsFd as _;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const NH_HOPOPTS: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AH: u8 = 51;
const NH_NONE: u8 = 59;
const NH_DSTOPTS: u8 = 60;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
const TPID_9100: u16 = 0x9100;

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

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "testrun needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) to load the XDP program \
         and run BPF_PROG_TEST_RUN; run it as root (e.g. `sudo -E cargo test -p fail2xdp-tests \
         --test testrun`)"
    );
}

/// One private instance of the data plane: object loaded, maps unpinned.
struct Dp {
    ebpf: Ebpf,
    slots: u32,
}

fn arr_name(n: &str) -> &'static str {
    map::ALL.iter().find(|&&m| m == n).copied().unwrap_or("?")
}

/// Ban tables of a test instance hold this many entries unless a test asks
/// for more (arrays are preallocated: keep parallel tests small).
const TEST_CAPACITY: u32 = 4096;

fn map_data(m: &Map) -> &MapData {
    match m {
        Map::Array(md) | Map::HashMap(md) => md,
        _ => panic!("unexpected map type"),
    }
}

impl Dp {
    fn new() -> Self {
        Self::with_capacity(TEST_CAPACITY)
    }

    fn with_capacity(cap: u32) -> Self {
        require_root();
        let slots = slots_for(cap);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map::BANS_V4, slots)
            .map_max_entries(map::BANS_V6, slots)
            .map_max_entries(map::PFX_V4, slots)
            .map_max_entries(map::PFX_V6, slots)
            .map_max_entries(map::ALLOW_V4, slots)
            .map_max_entries(map::ALLOW_V6, slots)
            .load(fail2xdp::EBPF_OBJECT)
            .unwrap_or_else(|e| panic!("loading the embedded XDP object: {e:?}"));
        for name in [PROG_NAME, "xdp_pass"] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("program {name} missing from the object"))
                .try_into()
                .unwrap_or_else(|e| panic!("program {name} is not XDP: {e:?}"));
            prog.load()
                .unwrap_or_else(|e| panic!("kernel refused program {name}: {e:?}"));
        }
        let dp = Dp { ebpf, slots };
        // Geometry and seed, as the enforcer sets them on a fresh instance.
        dp.t::<SlotV4>(TBL_BANS_V4)
            .repair()
            .expect("BANS_V4 geometry");
        dp.t::<SlotV6>(TBL_BANS_V6)
            .repair()
            .expect("BANS_V6 geometry");
        dp.t::<SlotP4>(TBL_PFX_V4)
            .repair()
            .expect("PFX_V4 geometry");
        dp.t::<SlotP6>(TBL_PFX_V6)
            .repair()
            .expect("PFX_V6 geometry");
        dp.t::<SlotA4>(TBL_ALLOW_V4)
            .repair()
            .expect("ALLOW_V4 geometry");
        dp.t::<SlotA6>(TBL_ALLOW_V6)
            .repair()
            .expect("ALLOW_V6 geometry");
        dp
    }

    /// The enforcer's table code on this instance's (unpinned) maps.
    fn t<S: Slot>(&self, tbl: usize) -> BanTable<'_, S> {
        let (arr, ovf) = [
            (map::BANS_V4, map::BANS_V4_OVF),
            (map::BANS_V6, map::BANS_V6_OVF),
            (map::PFX_V4, map::PFX_V4_OVF),
            (map::PFX_V6, map::PFX_V6_OVF),
            (map::ALLOW_V4, map::ALLOW_V4_OVF),
            (map::ALLOW_V6, map::ALLOW_V6_OVF),
        ][tbl];
        let md = |n: &str| {
            map_data(
                self.ebpf
                    .map(n)
                    .unwrap_or_else(|| panic!("map {n} missing")),
            )
        };
        BanTable::new(
            md(arr).fd().as_fd(),
            md(ovf).fd().as_fd(),
            md(map::CONFIG).fd().as_fd(),
            tbl,
            arr_name(arr),
            self.slots,
        )
    }

    fn prog(&self, name: &str) -> &Xdp {
        self.ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .unwrap_or_else(|| panic!("XDP program {name}"))
    }

    fn try_run_n(&self, name: &str, frame: &[u8], repeat: u32) -> Result<u32, ProgramError> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        self.prog(name).test_run(opts).map(|r| r.return_value)
    }

    fn run_n(&self, frame: &[u8], repeat: u32) -> u32 {
        self.try_run_n(PROG_NAME, frame, repeat)
            .unwrap_or_else(|e| panic!("test run of a {}-byte frame: {e:?}", frame.len()))
    }

    fn run(&self, frame: &[u8]) -> u32 {
        self.run_n(frame, 1)
    }

    fn config(&self) -> Config {
        let m = self.ebpf.map(map::CONFIG).expect("CONFIG map");
        let a: Array<_, Config> = Array::try_from(m).expect("CONFIG is an array");
        a.get(&0, 0).expect("CONFIG[0]")
    }

    fn set_config(&mut self, c: Config) {
        let m = self.ebpf.map_mut(map::CONFIG).expect("CONFIG map");
        let mut a: Array<_, Config> = Array::try_from(m).expect("CONFIG is an array");
        a.set(0, c, 0).expect("writing CONFIG[0]");
    }

    fn ban(&mut self, addr: IpAddr, v: BanValue) {
        match addr {
            IpAddr::V4(a) => self
                .t::<SlotV4>(TBL_BANS_V4)
                .insert_many(&[(a.octets(), v)]),
            IpAddr::V6(a) => self
                .t::<SlotV6>(TBL_BANS_V6)
                .insert_many(&[(a.octets(), v)]),
        }
        .expect("inserting an exact ban");
    }

    fn exact(&mut self, addr: IpAddr) -> BanValue {
        match addr {
            IpAddr::V4(a) => self.t::<SlotV4>(TBL_BANS_V4).get(&a.octets()),
            IpAddr::V6(a) => self.t::<SlotV6>(TBL_BANS_V6).get(&a.octets()),
        }
        .expect("reading an exact ban")
        .expect("the exact ban is there")
    }

    /// Inserts a prefix ban and makes sure its length has a slot, the way
    /// the contract asks userspace to: slot first, then `n`.
    fn ban_prefix(&mut self, addr: IpAddr, len: u32, v: BanValue) {
        match addr {
            IpAddr::V4(a) => {
                let key = key_v4(a, len);
                self.t::<SlotP4>(TBL_PFX_V4)
                    .insert_many(&[(key, v)])
                    .expect("inserting a v4 prefix ban");
                self.use_len(addr, len, false);
            }
            IpAddr::V6(a) => {
                let key = key_v6(a, len);
                self.t::<SlotP6>(TBL_PFX_V6)
                    .insert_many(&[(key, v)])
                    .expect("inserting a v6 prefix ban");
                self.use_len(addr, len, false);
            }
        }
    }

    fn prefix(&mut self, addr: IpAddr, len: u32) -> BanValue {
        match addr {
            IpAddr::V4(a) => self.t::<SlotP4>(TBL_PFX_V4).get(&key_v4(a, len)),
            IpAddr::V6(a) => self.t::<SlotP6>(TBL_PFX_V6).get(&key_v6(a, len)),
        }
        .expect("reading a prefix ban")
        .expect("the prefix ban is there")
    }

    fn allow(&mut self, addr: IpAddr, len: u32) {
        let v = AllowValue::default();
        match addr {
            IpAddr::V4(a) => self
                .t::<SlotA4>(TBL_ALLOW_V4)
                .insert_many(&[(key_v4(a, len), v)]),
            IpAddr::V6(a) => self
                .t::<SlotA6>(TBL_ALLOW_V6)
                .insert_many(&[(key_v6(a, len), v)]),
        }
        .expect("inserting an allowlist entry");
        self.use_len(addr, len, true);
    }

    /// Appends a slot for `len` unless one exists.
    fn use_len(&mut self, addr: IpAddr, len: u32, allow: bool) {
        let mut c = self.config();
        match (addr, allow) {
            (IpAddr::V4(_), _) => {
                let (n, slots) = if allow {
                    (&mut c.allow_v4_n, &mut c.allow_v4)
                } else {
                    (&mut c.pfx_v4_n, &mut c.pfx_v4)
                };
                if slots[..*n as usize].iter().any(|s| s.len == len) {
                    return;
                }
                slots[*n as usize] = LenSlotV4 {
                    len,
                    mask: mask_v4(len),
                };
                *n += 1;
            }
            (IpAddr::V6(_), _) => {
                let (n, slots) = if allow {
                    (&mut c.allow_v6_n, &mut c.allow_v6)
                } else {
                    (&mut c.pfx_v6_n, &mut c.pfx_v6)
                };
                if slots[..*n as usize].iter().any(|s| s.len == len) {
                    return;
                }
                slots[*n as usize] = LenSlotV6 {
                    len,
                    _pad: 0,
                    mask: mask_v6(len),
                };
                *n += 1;
            }
        }
        self.set_config(c);
    }

    /// Adds a free (LEN_UNUSED) slot below the ones in use, as after an
    /// unban freed a length; the program must skip it.
    fn add_free_slots(&mut self, count: u32) {
        let mut c = self.config();
        for _ in 0..count {
            c.pfx_v4[c.pfx_v4_n as usize].len = LEN_UNUSED;
            c.pfx_v4_n += 1;
            c.pfx_v6[c.pfx_v6_n as usize].len = LEN_UNUSED;
            c.pfx_v6_n += 1;
            c.allow_v4[c.allow_v4_n as usize].len = LEN_UNUSED;
            c.allow_v4_n += 1;
            c.allow_v6[c.allow_v6_n as usize].len = LEN_UNUSED;
            c.allow_v6_n += 1;
        }
        self.set_config(c);
    }

    fn stats(&mut self) -> Stats {
        let m = self.ebpf.map_mut(map::STATS).expect("STATS map");
        let a: PerCpuArray<_, Stats> = PerCpuArray::try_from(m).expect("STATS is per-CPU");
        let mut sum = Stats::default();
        for s in a.get(&0, 0).expect("STATS[0]").iter() {
            sum.add(s);
        }
        sum
    }
}

fn key_v4(a: Ipv4Addr, len: u32) -> PfxKeyV4 {
    let m = u32::from_be_bytes(mask_v4(len));
    PfxKeyV4 {
        len,
        addr: (u32::from(a) & m).to_be_bytes(),
    }
}

fn key_v6(a: Ipv6Addr, len: u32) -> PfxKeyV6 {
    let m: u128 = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len.min(128))
    };
    PfxKeyV6 {
        len,
        addr: (u128::from(a) & m).to_be_bytes(),
    }
}

fn permanent() -> BanValue {
    BanValue {
        expires_ns: EXPIRES_NEVER,
        ..Default::default()
    }
}

fn on_ports(ports: &[u16]) -> BanValue {
    let mut v = permanent();
    v.nports = ports.len() as u32;
    v.ports[..ports.len()].copy_from_slice(ports);
    v
}

fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

fn eth(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn tcp(dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = 0x02; // SYN
    h
}

fn udp(dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&8u16.to_be_bytes());
    h
}

/// IPv4 header with `options` (a multiple of 4 bytes), `frag` = the 16-bit
/// flags+offset field, then `l4`.
fn ipv4(src: Ipv4Addr, proto: u8, options: &[u8], frag: u16, l4: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let hlen = 20 + options.len();
    let mut h = vec![0u8; 20];
    h[0] = 0x40 | (hlen / 4) as u8;
    h[2..4].copy_from_slice(&((hlen + l4.len()) as u16).to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&[192, 0, 2, 254]);
    h.extend_from_slice(options);
    let mut sum = 0u32;
    for w in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h.extend_from_slice(l4);
    h
}

/// IPv6 header whose next header is `next`, followed by `rest` (extension
/// headers and L4 already chained by the caller).
fn ipv6(src: Ipv6Addr, next: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&v6("2001:db8::fe").octets());
    h.extend_from_slice(rest);
    h
}

/// Hop-by-hop / routing / destination options header: (len + 1) * 8 bytes.
fn opt_hdr(next: u8, len: u8) -> Vec<u8> {
    let mut h = vec![0u8; (len as usize + 1) * 8];
    h[0] = next;
    h[1] = len;
    h
}

/// Fragment header with fragment offset `off` (in 8-byte units).
fn frag_hdr(next: u8, off: u16, more: bool) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0] = next;
    h[2..4].copy_from_slice(&((off << 3) | u16::from(more)).to_be_bytes());
    h[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    h
}

/// Authentication header: (len + 2) * 4 bytes.
fn ah_hdr(next: u8, len: u8) -> Vec<u8> {
    let mut h = vec![0u8; (len as usize + 2) * 4];
    h[0] = next;
    h[1] = len;
    h
}

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
        assert!(dp.ebpf.map(name).is_some(), "map {name} missing");
    }
    let mut names: Vec<_> = dp.ebpf.programs().map(|(n, _)| n.to_owned()).collect();
    names.sort();
    assert_eq!(names, ["fail2xdp", "xdp_pass"]);
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
    // A free slot before the real one: it must be skipped, not end the probe.
    dp.add_free_slots(1);
    dp.ban_prefix(V4_NET_BANNED.into(), 24, permanent());
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
    dp.add_free_slots(2);
    dp.ban_prefix(v6("2001:db8:aa::").into(), 48, permanent());
    dp.ban_prefix(v6("2001:db8:bb:cc::").into(), 64, permanent());
    dp.ban_prefix(v6("2001:db8:cc::40").into(), 122, permanent());
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
    // All eight port slots are honoured, and entries past nports are not.
    let mut full = on_ports(&[1, 2, 3, 4, 5, 6, 7, 8]);
    dp.ban(V4_BANNED.into(), full);
    expect(&dp, &v4_tcp(V4_BANNED, 8), XDP_DROP, "8th port");
    full.nports = 7;
    dp.ban(V4_BANNED.into(), full);
    expect(&dp, &v4_tcp(V4_BANNED, 8), XDP_PASS, "port beyond nports");
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
    if let Some(at) = last_nh_at {
        if chain[at] == TCP {
            chain[at] = to;
        }
    }
}

#[test]
fn expired_ban_passes() {
    let mut dp = Dp::new();
    let now = boottime_ns();
    let mut expired = permanent();
    expired.expires_ns = now - 1_000_000_000;
    let mut live = permanent();
    live.expires_ns = now + 3600 * 1_000_000_000;
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
    dp.add_free_slots(1);
    dp.allow(trusted.into(), 32);
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
    // Other fields of the value are left alone.
    let v = dp.exact(V4_BANNED.into());
    assert_eq!((v.expires_ns, v.nports, v.jail_id), (EXPIRES_NEVER, 0, 0));
}

#[test]
fn stats_count_every_packet_once() {
    let mut dp = Dp::new();
    let now = boottime_ns();
    dp.ban(V4_BANNED.into(), permanent());
    dp.ban(v6("2001:db8::66").into(), permanent());
    dp.ban_prefix(V4_NET_BANNED.into(), 24, permanent());
    dp.ban_prefix(v6("2001:db8:aa::").into(), 48, permanent());
    dp.ban(V4_PORTS.into(), on_ports(&[25]));
    let mut expired = permanent();
    expired.expires_ns = now - 1;
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
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
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

/// Performance budget check against the trivial program in the same object;
/// timing-sensitive, so run by hand on a quiet machine:
/// `cargo test --release -p fail2xdp-tests --test testrun -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run with --ignored on a quiet machine"]
fn verdict_cost_within_budget() {
    const N: u32 = 1 << 20;
    let mut dp = Dp::with_capacity(N);
    {
        // Keys from reserved 240.0.0.0/4: never sent, only the table size matters.
        let mut items: Vec<([u8; 4], BanValue)> = (0..N - 1)
            .map(|i| ((0xf000_0000u32 + i).to_be_bytes(), permanent()))
            .collect();
        items.push((V4_BANNED.octets(), permanent()));
        dp.t::<SlotV4>(TBL_BANS_V4)
            .insert_many(&items)
            .expect("bulk insert");
    }
    let clean = v4_tcp(V4_CLEAN, 25);
    let banned = v4_tcp(V4_BANNED, 25);
    let time = |dp: &Dp, name: &str, f: &[u8]| -> f64 {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let opts = TestRunOptions {
                data_in: Some(f),
                repeat: 1_000_000,
                ..Default::default()
            };
            let r = dp.prog(name).test_run(opts).expect("timed run");
            best = best.min(r.duration.as_nanos() as f64);
        }
        best
    };
    let base = time(&dp, "xdp_pass", &clean);
    let c = time(&dp, PROG_NAME, &clean) - base;
    let d = time(&dp, PROG_NAME, &banned) - base;
    println!("trivial {base:.1} ns, 1M exact: clean +{c:.1} ns, banned +{d:.1} ns");
    // 10k /24 prefix bans: one length in use, the usual case.
    for i in 0..10_000u32 {
        let a = Ipv4Addr::from(0xf800_0000u32 + (i << 8));
        dp.ban_prefix(a.into(), 24, permanent());
    }
    let p = time(&dp, PROG_NAME, &clean) - base;
    println!("+10k /24 prefix bans: clean +{p:.1} ns");
    // Three more lengths: each costs one more hash probe.
    for len in [20, 16, 12] {
        dp.ban_prefix(Ipv4Addr::new(240, 0, 0, 0).into(), len, permanent());
    }
    let p4 = time(&dp, PROG_NAME, &clean) - base;
    println!("  with 4 lengths in use: clean +{p4:.1} ns (no budget, informational)");
    assert!(
        c <= 25.0,
        "clean packet with 1M exact bans: +{c:.1} ns > 25"
    );
    assert!(
        d <= 30.0,
        "banned packet with 1M exact bans: +{d:.1} ns > 30"
    );
    assert!(
        p <= 60.0,
        "clean packet with 10k prefix bans: +{p:.1} ns > 60"
    );
}

/// Keys whose home slot is the same go to the next slots, then past
/// MAX_PROBE to the overflow map; the XDP program must find every one, and
/// backward-shift deletion must leave the others findable.
#[test]
fn colliding_keys_probe_overflow_and_shift_back() {
    use fail2xdp_common::{MAX_PROBE, fold_v6, home};
    let dp = Dp::new();
    let g = dp.config().tables[TBL_BANS_V6];
    assert_ne!(g.bits, 0, "geometry set up");
    let home_of = |a: &Ipv6Addr| {
        let o = a.octets();
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&o[..8]);
        lo.copy_from_slice(&o[8..]);
        home(
            fold_v6(u64::from_ne_bytes(hi), u64::from_ne_bytes(lo)),
            g.seed,
            g.bits,
        ) & g.mask
    };
    let base = u128::from(v6("2001:db8:f00::"));
    let first = Ipv6Addr::from(base);
    let target = home_of(&first);
    let keys: Vec<Ipv6Addr> = (0u128..10_000_000)
        .map(|i| Ipv6Addr::from(base + i))
        .filter(|a| home_of(a) == target)
        .take(MAX_PROBE as usize + 4)
        .collect();
    assert_eq!(keys.len(), MAX_PROBE as usize + 4, "found colliding keys");
    let t = dp.t::<SlotV6>(TBL_BANS_V6);
    let items: Vec<_> = keys.iter().map(|a| (a.octets(), permanent())).collect();
    assert_eq!(t.insert_many(&items).expect("ban"), keys.len());
    let tg = dp.config().tables[TBL_BANS_V6];
    assert_eq!((tg.count, tg.ovf), (MAX_PROBE, 4));
    for a in &keys {
        expect(&dp, &v6_tcp(*a, 25), XDP_DROP, &format!("colliding {a}"));
    }
    expect(
        &dp,
        &v6_tcp(v6("2001:db8:f00::ffff:1"), 25),
        XDP_PASS,
        "clean",
    );
    // Remove two in the table (one at home, one in the middle) and one that
    // overflowed; the rest stay dropped.
    let gone = [keys[0], keys[5], keys[MAX_PROBE as usize + 1]];
    for a in &gone {
        assert!(t.remove(&a.octets()).expect("unban"), "{a} was there");
        assert!(!t.remove(&a.octets()).expect("unban again"));
    }
    let tg = dp.config().tables[TBL_BANS_V6];
    assert_eq!((tg.count, tg.ovf), (MAX_PROBE - 2, 3));
    for a in &keys {
        let want = if gone.contains(a) { XDP_PASS } else { XDP_DROP };
        expect(&dp, &v6_tcp(*a, 25), want, &format!("after unbans {a}"));
    }
    // A re-ban of an overflowed key updates it there and keeps its drops.
    let ov = keys[MAX_PROBE as usize + 2];
    let before = dp.t::<SlotV6>(TBL_BANS_V6).get(&ov.octets()).expect("get");
    assert!(before.is_some_and(|v| v.drops >= 1));
    t.insert_many(&[(ov.octets(), on_ports(&[587]))])
        .expect("re-ban");
    let after = t.get(&ov.octets()).expect("get").expect("still banned");
    assert_eq!(
        (after.nports, after.drops),
        (1, before.map_or(0, |v| v.drops))
    );
    assert_eq!(dp.config().tables[TBL_BANS_V6].ovf, 3);
    expect(&dp, &v6_tcp(ov, 25), XDP_PASS, "other port");
    expect(&dp, &v6_tcp(ov, 587), XDP_DROP, "its port");
}

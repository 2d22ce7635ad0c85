//! Frames through the XDP program with BPF_PROG_TEST_RUN: the verdict is
//! XDP_PASS unless the frame's source is banned, and never anything else
//! (no abort, no refused run). Self-contained, as tests/tests/testrun.rs:
//! a private copy of the embedded object, unpinned maps holding a few
//! bans and an allowlisted network inside a banned one. Needs root.
#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    sync::OnceLock,
};

use aya::{
    Ebpf, EbpfLoader, TestRun, TestRunOptions,
    maps::{Array, Map, MapData},
    programs::Xdp,
};
use fail2xdp::enforcer::table::{BanTable, Slot, slots_for};
use fail2xdp_common::{
    AllowValue, BanValue, Config, EXPIRES_NEVER, LenSlotV4, LenSlotV6, PROG_NAME, PfxKeyV4,
    PfxKeyV6, SlotA4, SlotP4, SlotP6, SlotV4, SlotV6, TBL_ALLOW_V4, TBL_BANS_V4, TBL_BANS_V6,
    TBL_PFX_V4, TBL_PFX_V6, map, mask_v4, mask_v6,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

// Documentation addresses only.
const V4_EXACT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
const V4_NET: (Ipv4Addr, u32) = (Ipv4Addr::new(198, 51, 100, 0), 24);
/// Allowlisted, inside V4_NET: passed whatever the bans say.
const V4_ALLOWED: (Ipv4Addr, u32) = (Ipv4Addr::new(198, 51, 100, 128), 25);
/// Banned on port 25 only.
const V4_PORTS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 25);
const V6_EXACT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x66);
const V6_NET: (Ipv6Addr, u32) = (Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 0), 48);

/// A source the maps ban (on some port at least), allowlist aside.
fn banned(src: IpAddr) -> bool {
    let in4 = |a: Ipv4Addr, (n, len): (Ipv4Addr, u32)| {
        u32::from(a) & u32::from_be_bytes(mask_v4(len)) == u32::from(n)
    };
    match src {
        IpAddr::V4(a) => !in4(a, V4_ALLOWED) && (a == V4_EXACT || a == V4_PORTS || in4(a, V4_NET)),
        IpAddr::V6(a) => {
            let (n, len) = V6_NET;
            a == V6_EXACT || u128::from(a) >> (128 - len) == u128::from(n) >> (128 - len)
        }
    }
}

/// Where the program finds the source: behind the Ethernet header and up
/// to two VLAN tags (more tags: not a frame it reads, it passes).
fn source(frame: &[u8]) -> Option<IpAddr> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
    for _ in 0..2 {
        if !matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
            break;
        }
        off += 4;
        ethertype = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
    }
    let l3 = off + 2;
    match ethertype {
        0x0800 => {
            let b: [u8; 4] = frame.get(l3 + 12..l3 + 16)?.try_into().ok()?;
            Some(IpAddr::V4(b.into()))
        }
        0x86dd => {
            let b: [u8; 16] = frame.get(l3 + 8..l3 + 24)?.try_into().ok()?;
            Some(IpAddr::V6(b.into()))
        }
        _ => None,
    }
}

struct Dp {
    ebpf: Ebpf,
    slots: u32,
}

// SAFETY: aya's handles are file descriptors; libFuzzer runs the target on
// one thread, and the maps are only written before the first run.
unsafe impl Sync for Dp {}
// SAFETY: as above.
unsafe impl Send for Dp {}

fn map_data(m: &Map) -> &MapData {
    match m {
        Map::Array(md) | Map::HashMap(md) => md,
        _ => panic!("unexpected map type"),
    }
}

impl Dp {
    fn new() -> Dp {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the frames target loads the XDP program and runs BPF_PROG_TEST_RUN: run it as root"
        );
        let slots = slots_for(1024);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map::BANS_V4, slots)
            .map_max_entries(map::BANS_V6, slots)
            .map_max_entries(map::PFX_V4, slots)
            .map_max_entries(map::PFX_V6, slots)
            .map_max_entries(map::ALLOW_V4, slots)
            .map_max_entries(map::ALLOW_V6, slots)
            .load(fail2xdp::EBPF_OBJECT)
            .unwrap_or_else(|e| panic!("loading the embedded XDP object: {e:?}"));
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_NAME)
            .expect("the XDP program")
            .try_into()
            .expect("an XDP program");
        prog.load()
            .unwrap_or_else(|e| panic!("the kernel refused the program: {e:?}"));
        let mut dp = Dp { ebpf, slots };
        dp.t::<SlotV4>(TBL_BANS_V4).repair().expect("BANS_V4");
        dp.t::<SlotV6>(TBL_BANS_V6).repair().expect("BANS_V6");
        dp.t::<SlotP4>(TBL_PFX_V4).repair().expect("PFX_V4");
        dp.t::<SlotP6>(TBL_PFX_V6).repair().expect("PFX_V6");
        dp.t::<SlotA4>(TBL_ALLOW_V4).repair().expect("ALLOW_V4");
        let forever = BanValue {
            expires_ns: EXPIRES_NEVER,
            ..Default::default()
        };
        let mut port25 = forever;
        port25.nports = 1;
        port25.ports[0] = 25;
        dp.t::<SlotV4>(TBL_BANS_V4)
            .insert_many(&[(V4_EXACT.octets(), forever), (V4_PORTS.octets(), port25)])
            .expect("v4 bans");
        dp.t::<SlotV6>(TBL_BANS_V6)
            .insert_many(&[(V6_EXACT.octets(), forever)])
            .expect("v6 ban");
        dp.t::<SlotP4>(TBL_PFX_V4)
            .insert_many(&[(key_v4(V4_NET), forever)])
            .expect("v4 prefix ban");
        dp.t::<SlotP6>(TBL_PFX_V6)
            .insert_many(&[(key_v6(V6_NET), forever)])
            .expect("v6 prefix ban");
        dp.t::<SlotA4>(TBL_ALLOW_V4)
            .insert_many(&[(key_v4(V4_ALLOWED), AllowValue::default())])
            .expect("allowlist");
        // The lengths in use, slot first, then the count (as the enforcer does).
        let mut c = dp.config();
        c.pfx_v4[c.pfx_v4_n as usize] = LenSlotV4 {
            len: V4_NET.1,
            mask: mask_v4(V4_NET.1),
        };
        c.pfx_v4_n += 1;
        c.allow_v4[c.allow_v4_n as usize] = LenSlotV4 {
            len: V4_ALLOWED.1,
            mask: mask_v4(V4_ALLOWED.1),
        };
        c.allow_v4_n += 1;
        c.pfx_v6[c.pfx_v6_n as usize] = LenSlotV6 {
            len: V6_NET.1,
            _pad: 0,
            mask: mask_v6(V6_NET.1),
        };
        c.pfx_v6_n += 1;
        let m = dp.ebpf.map_mut(map::CONFIG).expect("CONFIG");
        let mut a: Array<_, Config> = Array::try_from(m).expect("CONFIG is an array");
        a.set(0, c, 0).expect("writing CONFIG");
        dp
    }

    fn t<S: Slot>(&self, tbl: usize) -> BanTable<'_, S> {
        let (arr, ovf) = [
            (map::BANS_V4, map::BANS_V4_OVF),
            (map::BANS_V6, map::BANS_V6_OVF),
            (map::PFX_V4, map::PFX_V4_OVF),
            (map::PFX_V6, map::PFX_V6_OVF),
            (map::ALLOW_V4, map::ALLOW_V4_OVF),
            (map::ALLOW_V6, map::ALLOW_V6_OVF),
        ][tbl];
        let md = |n: &str| map_data(self.ebpf.map(n).unwrap_or_else(|| panic!("map {n}")));
        let name = map::ALL.iter().find(|&&m| m == arr).copied().unwrap_or("?");
        BanTable::new(
            md(arr).fd().as_fd(),
            md(ovf).fd().as_fd(),
            md(map::CONFIG).fd().as_fd(),
            tbl,
            name,
            self.slots,
        )
    }

    fn config(&self) -> Config {
        let m = self.ebpf.map(map::CONFIG).expect("CONFIG");
        let a: Array<_, Config> = Array::try_from(m).expect("CONFIG is an array");
        a.get(&0, 0).expect("CONFIG[0]")
    }

    fn run(&self, frame: &[u8]) -> u32 {
        let prog: &Xdp = self
            .ebpf
            .program(PROG_NAME)
            .and_then(|p| p.try_into().ok())
            .expect("the XDP program");
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        };
        prog.test_run(opts)
            .map(|r| r.return_value)
            .unwrap_or_else(|e| panic!("test run of a {}-byte frame: {e:?}", frame.len()))
    }
}

fn key_v4((a, len): (Ipv4Addr, u32)) -> PfxKeyV4 {
    PfxKeyV4 {
        len,
        addr: (u32::from(a) & u32::from_be_bytes(mask_v4(len))).to_be_bytes(),
    }
}

fn key_v6((a, len): (Ipv6Addr, u32)) -> PfxKeyV6 {
    PfxKeyV6 {
        len,
        addr: (u128::from(a) & (u128::MAX << (128 - len))).to_be_bytes(),
    }
}

/// The kernel runs frames of an Ethernet header up to what fits a page
/// beside XDP's headroom; outside that it refuses the run itself.
const FRAME_MIN: usize = 14;
const FRAME_MAX: usize = 3000;

static DP: OnceLock<Dp> = OnceLock::new();

libfuzzer_sys::fuzz_target!(init: {
    DP.get_or_init(Dp::new);
}, |frame: &[u8]| {
    let dp = DP.get_or_init(Dp::new);
    if !(FRAME_MIN..=FRAME_MAX).contains(&frame.len()) {
        return;
    }
    let verdict = dp.run(frame);
    let src = source(frame);
    match verdict {
        XDP_PASS => {}
        XDP_DROP => assert!(
            src.is_some_and(banned),
            "dropped a frame from {src:?}, which no ban covers"
        ),
        v => panic!("verdict {v} for a frame from {src:?}"),
    }
});

//! Frames through the XDP program with BPF_PROG_TEST_RUN: the verdict is
//! XDP_PASS unless the frame's source is banned (then XDP_DROP), and never
//! anything else (no abort, no refused run). For the bans that cover every
//! port the verdict is exact: a frame the program can read from a banned,
//! not allowlisted source is dropped, every other frame passes.
//!
//! As tests/src/instance.rs: the real enforcer creates the maps in a pin
//! dir of this process's own (/sys/fs/bpf/f2x-fuzz-frames-PID) and writes
//! a few bans and allowlisted networks inside banned ones; the embedded
//! object is loaded again over those pins, so frames meet exactly what the
//! enforcer wrote. The pin dir goes at exit; one left by a process that
//! died (a crash aborts, a timeout _exits) goes when the next one starts.
//! Needs root.
#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use aya::{Ebpf, EbpfLoader, TestRun, TestRunOptions, programs::Xdp};
use fail2xdp::enforcer::{BanRequest, Capacities, Enforcer, IpNet, PortSet, WriteMode, detach};
use fail2xdp_common::{PROG_NAME, map};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

// Documentation addresses only (the seeds in fuzz/corpus/frames use them).
const V4_EXACT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
const V4_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 51, 100, 0), 24);
/// Allowlisted, inside V4_NET: passed whatever the bans say.
const V4_ALLOWED: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 51, 100, 128), 25);
/// A second prefix length, so the program probes more than one slot.
const V4_NET2: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 15);
/// Banned on port 25 only.
const V4_PORTS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 25);
const V6_EXACT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x66);
const V6_NET: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 0), 48);
/// Allowlisted, inside V6_NET.
const V6_ALLOWED: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0x600d, 0, 0, 0, 0), 64);
/// A second IPv6 prefix length.
const V6_NET2: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0xf000, 0, 0, 0, 0, 0), 36);

fn in4(a: Ipv4Addr, (n, len): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(a) & mask == u32::from(n) & mask
}

fn in6(a: Ipv6Addr, (n, len): (Ipv6Addr, u8)) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(a) & mask == u128::from(n) & mask
}

/// What the program must answer for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Pass,
    Drop,
    /// Banned on some ports only: which the frame goes to is the program's
    /// reading of its L4 header, not checked here.
    Either,
}

/// The verdict the maps call for on a frame from `src`.
fn policy(src: IpAddr) -> Expect {
    match src {
        IpAddr::V4(a) => {
            if in4(a, V4_ALLOWED) {
                Expect::Pass
            } else if a == V4_EXACT || in4(a, V4_NET) || in4(a, V4_NET2) {
                Expect::Drop
            } else if a == V4_PORTS {
                Expect::Either
            } else {
                Expect::Pass
            }
        }
        IpAddr::V6(a) => {
            if in6(a, V6_ALLOWED) {
                Expect::Pass
            } else if a == V6_EXACT || in6(a, V6_NET) || in6(a, V6_NET2) {
                Expect::Drop
            } else {
                Expect::Pass
            }
        }
    }
}

fn is_vlan(ethertype: u16) -> bool {
    matches!(ethertype, 0x8100 | 0x88a8 | 0x9100)
}

/// The source of a frame the program reads (ebpf/src/parse.rs): behind the
/// Ethernet header and up to two VLAN tags, a whole fixed IPv4 header of
/// version 4 and IHL 5 at least, or a whole fixed IPv6 header of version
/// 6. Anything else it passes unread.
fn source(frame: &[u8]) -> Option<IpAddr> {
    let be16 = |off: usize| -> Option<u16> {
        Some(u16::from_be_bytes(
            frame.get(off..off + 2)?.try_into().ok()?,
        ))
    };
    let mut ethertype = be16(12)?;
    let mut off = 14;
    for _ in 0..2 {
        if !is_vlan(ethertype) {
            break;
        }
        ethertype = be16(off + 2)?;
        off += 4;
    }
    match ethertype {
        0x0800 => {
            let h = frame.get(off..off + 20)?;
            if h[0] >> 4 != 4 || h[0] & 0x0f < 5 {
                return None;
            }
            let b: [u8; 4] = h[12..16].try_into().ok()?;
            Some(IpAddr::V4(b.into()))
        }
        0x86dd => {
            let h = frame.get(off..off + 40)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let b: [u8; 16] = h[8..24].try_into().ok()?;
            Some(IpAddr::V6(b.into()))
        }
        _ => None,
    }
}

const PIN_PREFIX: &str = "f2x-fuzz-frames-";
const BPFFS: &str = "/sys/fs/bpf";

/// Removes the pin dirs of earlier runs whose process is gone.
fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir(BPFFS) else {
        return;
    };
    for ent in dir.flatten() {
        let name = ent.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PIN_PREFIX))
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && let Err(e) = detach(&ent.path(), &[]) {
            eprintln!("frames: removing the stale {}: {e:#}", ent.path().display());
        }
    }
}

static PIN_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_pin_dir() {
    if let Some(p) = PIN_DIR.get()
        && let Err(e) = detach(p, &[])
    {
        eprintln!("frames: removing {}: {e:#}", p.display());
    }
}

struct Dp {
    /// Holds the maps' writer side for the life of the process.
    _enforcer: Enforcer,
    ebpf: Ebpf,
}

// SAFETY: aya's handles are file descriptors; libFuzzer runs the target on
// one thread, and the maps are only written before the first run.
unsafe impl Sync for Dp {}
// SAFETY: as above.
unsafe impl Send for Dp {}

fn net(a: impl Into<IpAddr>, len: u8) -> IpNet {
    IpNet::new(a.into(), len)
        .expect("a valid prefix length")
        .trunc()
}

impl Dp {
    fn new() -> Dp {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the frames target loads the XDP program and runs BPF_PROG_TEST_RUN: run it as root"
        );
        sweep_stale();
        let pin_dir = Path::new(BPFFS).join(format!("{PIN_PREFIX}{}", std::process::id()));
        // A dir of this very pid can only be from a process that died
        // before (pids are reused): start afresh.
        if let Err(e) = detach(&pin_dir, &[]) {
            panic!("removing the old {}: {e:#}", pin_dir.display());
        }
        PIN_DIR.set(pin_dir.clone()).expect("one data plane");
        // SAFETY: registers a plain extern "C" function.
        unsafe { libc::atexit(remove_pin_dir) };
        let caps = Capacities::small(1024);
        let mut enforcer = Enforcer::load(&pin_dir, &caps).unwrap_or_else(|e| {
            panic!("creating the data plane under {}: {e:#}", pin_dir.display())
        });
        let ban = |e: &mut Enforcer, n: IpNet, ports: &[u16]| {
            let req = BanRequest {
                net: n,
                ttl: None,
                ports: PortSet::from_ports(ports.to_vec()).expect("ports"),
                jail: "fuzz".into(),
                mode: WriteMode::Replace,
            };
            e.ban(&req)
                .unwrap_or_else(|err| panic!("banning {n}: {err:#}"));
        };
        ban(&mut enforcer, net(V4_EXACT, 32), &[]);
        ban(&mut enforcer, net(V4_PORTS, 32), &[25]);
        ban(&mut enforcer, net(V4_NET.0, V4_NET.1), &[]);
        ban(&mut enforcer, net(V4_NET2.0, V4_NET2.1), &[]);
        ban(&mut enforcer, net(V6_EXACT, 128), &[]);
        ban(&mut enforcer, net(V6_NET.0, V6_NET.1), &[]);
        ban(&mut enforcer, net(V6_NET2.0, V6_NET2.1), &[]);
        for n in [
            net(V4_ALLOWED.0, V4_ALLOWED.1),
            net(V6_ALLOWED.0, V6_ALLOWED.1),
        ] {
            enforcer
                .allow_add(&n)
                .unwrap_or_else(|e| panic!("allowlisting {n}: {e:#}"));
        }

        let mut loader = EbpfLoader::new();
        for name in map::ALL {
            loader.map_pin_path(name, pin_dir.join(name));
        }
        let mut ebpf = loader
            .load(fail2xdp::EBPF_OBJECT)
            .unwrap_or_else(|e| panic!("loading the embedded XDP object over the pins: {e:?}"));
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_NAME)
            .expect("the XDP program")
            .try_into()
            .expect("an XDP program");
        prog.load()
            .unwrap_or_else(|e| panic!("the kernel refused the program: {e:?}"));
        Dp {
            _enforcer: enforcer,
            ebpf,
        }
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
    let want = src.map_or(Expect::Pass, policy);
    match (verdict, want) {
        (XDP_PASS, Expect::Pass | Expect::Either) | (XDP_DROP, Expect::Drop | Expect::Either) => {}
        (XDP_PASS, Expect::Drop) => panic!("passed a frame from {src:?}, which a ban covers"),
        (XDP_DROP, Expect::Pass) => {
            panic!("dropped a frame from {src:?}, which no ban covers (or the program cannot read)")
        }
        (v, _) => panic!("verdict {v} for a frame from {src:?}"),
    }
});

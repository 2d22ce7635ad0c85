//! AF_PACKET sender and counting receiver on the two ends of a [`NetnsPair`].
//!
//! The receiver is the ground truth for pass/drop: XDP runs before any
//! AF_PACKET tap, so a frame XDP dropped is never seen there.
//!
//! [`NetnsPair`]: crate::NetnsPair

use std::{
    collections::HashMap,
    ffi::CString,
    io, mem,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{netns::Netns, packet::Probe, packet::parse_l4};

const ETH_P_ALL: u16 = 0x0003;
/// Destination port of the settle marker; tests must not ban it on the link address.
pub const MARKER_PORT: u16 = 9;
/// Distinct non-TCP frames remembered by [`Receiver::count_frame`].
const MAX_OTHER_FRAMES: usize = 4096;

fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn if_index(ifname: &str) -> io::Result<i32> {
    let c = CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is NUL-terminated.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(idx as i32)
}

fn bind_to(fd: &OwnedFd, ifindex: i32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: sll is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_int_opt(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value is an int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<i32>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends crafted frames out of the sending veth. `Sync`: a flood may run on
/// one thread while the test does other things on another.
#[derive(Debug)]
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    /// An AF_PACKET socket in `ns`, bound to `ifname`.
    pub fn open(ns: &Netns, ifname: &str) -> Result<Self> {
        let fd = ns
            .run(|| -> io::Result<OwnedFd> {
                // Protocol 0: this socket transmits only, it receives nothing.
                let fd = packet_socket(0)?;
                bind_to(&fd, if_index(ifname)?, 0)?;
                Ok(fd)
            })?
            .with_context(|| format!("AF_PACKET socket on {ifname} in {}", ns.name()))?;
        Ok(Self { fd })
    }

    /// Sends one frame, waiting out a full transmit queue (ENOBUFS) for up to a second.
    pub fn send_frame(&self, frame: &[u8]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            // SAFETY: frame is a valid buffer of frame.len() bytes.
            let n =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n == frame.len() as isize {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOBUFS) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            return Err(err).context("sending a frame on the sending veth");
        }
    }

    /// Sends `count` copies of `probe`.
    pub fn send(&self, probe: &Probe, count: u64) -> Result<()> {
        let frame = probe.frame();
        for _ in 0..count {
            self.send_frame(&frame)?;
        }
        Ok(())
    }

    /// Sends the `probes` round-robin until `stop` is set or `max` has passed,
    /// paced to a few thousand frames a second per packet so the receiver keeps
    /// up. Returns how many of each were sent.
    pub fn flood(&self, probes: &[Probe], stop: &AtomicBool, max: Duration) -> Result<Vec<u64>> {
        let frames: Vec<Vec<u8>> = probes.iter().map(Probe::frame).collect();
        let mut sent = vec![0u64; frames.len()];
        let end = Instant::now() + max;
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            for _ in 0..4 {
                for (f, n) in frames.iter().zip(sent.iter_mut()) {
                    self.send_frame(f)?;
                    *n += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(sent)
    }
}

#[derive(Debug)]
struct Shared {
    fd: OwnedFd,
    counts: Mutex<HashMap<(IpAddr, u8, u16), u64>>,
    /// Frames that are not TCP over IP, by their exact bytes (bounded).
    others: Mutex<HashMap<Vec<u8>, u64>>,
    stop: AtomicBool,
    socket_drops: AtomicU64,
}

/// Counts TCP and UDP frames arriving on the receiving veth per (source,
/// protocol, dest port),
/// on a background thread, until dropped.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    pub fn open(ns: &Netns, ifname: &str) -> Result<Self> {
        let fd = ns
            .run(|| -> io::Result<OwnedFd> {
                let fd = packet_socket(ETH_P_ALL)?;
                // Room for a burst while the counting thread waits for a core.
                set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 32 << 20)?;
                bind_to(&fd, if_index(ifname)?, ETH_P_ALL)?;
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 50_000,
                };
                // SAFETY: tv is a timeval of the size passed.
                let rc = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&raw const tv).cast(),
                        mem::size_of::<libc::timeval>() as u32,
                    )
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(fd)
            })?
            .with_context(|| format!("AF_PACKET receiver on {ifname} in {}", ns.name()))?;
        let shared = Arc::new(Shared {
            fd,
            counts: Mutex::new(HashMap::new()),
            others: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            socket_drops: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("rx-{ifname}"))
            .spawn(move || count_loop(&s))
            .context("spawning the receiver thread")?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Frames seen so far like `p`: same source, protocol and destination port.
    pub fn count(&self, p: &Probe) -> u64 {
        self.count_key(p.key())
    }

    /// Frames seen so far under a (source, IP protocol, destination port) key.
    pub fn count_key(&self, key: (IpAddr, u8, u16)) -> u64 {
        let counts = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&key).copied().unwrap_or(0)
    }

    /// How many frames with exactly these bytes arrived, for frames that are
    /// not TCP or UDP over IPv4/IPv6 (truncated or malformed ones, other protocols).
    /// Untagged frames arrive byte for byte as sent.
    pub fn count_frame(&self, frame: &[u8]) -> u64 {
        let others = self.shared.others.lock().unwrap_or_else(|e| e.into_inner());
        others.get(frame).copied().unwrap_or(0)
    }

    /// Every (source, IP protocol, dest port) seen, with its count.
    pub fn snapshot(&self) -> HashMap<(IpAddr, u8, u16), u64> {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Frames the kernel dropped because this socket's buffer was full. A
    /// count of zero for a banned source proves nothing unless this is zero.
    pub fn socket_drops(&self) -> u64 {
        read_packet_drops(&self.shared);
        self.shared.socket_drops.load(Ordering::Relaxed)
    }

    /// Returns once every frame sent before the call has been through the
    /// receiving veth and counted: sends a marker SYN from the link's own
    /// address (never banned by tests) behind them and waits for it, since a
    /// veth delivers in order. Fails if the marker does not show up in 5 s
    /// (the marker itself dropped means the data plane dropped a clean source).
    pub fn settle(&self, tx: &Sender) -> Result<()> {
        let marker = crate::NetnsPair::marker();
        let before = self.count(&marker);
        tx.send(&marker, 1)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.count(&marker) == before {
            if Instant::now() > deadline {
                bail!(
                    "settle marker {}:{} -> {} not received within 5 s: the receiving side \
                     dropped a clean packet, or the veth is not delivering",
                    marker.src,
                    marker.sport,
                    marker.dport
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if self.socket_drops() != 0 {
            bail!("the receiver's socket dropped frames: counts are not exact");
        }
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn count_loop(s: &Shared) {
    let mut buf = [0u8; 2048];
    while !s.stop.load(Ordering::Relaxed) {
        // SAFETY: sockaddr_ll is plain data.
        let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut fromlen = mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: buf and from are valid for the sizes passed.
        let n = unsafe {
            libc::recvfrom(
                s.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &mut fromlen,
            )
        };
        let Ok(n) = usize::try_from(n) else { continue }; // timeout or EINTR: check stop
        // The socket also sees what the receiving side itself transmits (RSTs).
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        if let Some(key) = parse_l4(&buf[..n]) {
            *s.counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_insert(0) += 1;
        } else {
            let mut others = s.others.lock().unwrap_or_else(|e| e.into_inner());
            if others.len() < MAX_OTHER_FRAMES || others.contains_key(&buf[..n]) {
                *others.entry(buf[..n].to_vec()).or_insert(0) += 1;
            }
        }
    }
}

fn read_packet_drops(s: &Shared) {
    #[repr(C)]
    struct TpacketStats {
        tp_packets: u32,
        tp_drops: u32,
    }
    let mut st = TpacketStats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = mem::size_of::<TpacketStats>() as u32;
    // SAFETY: st is a tpacket_stats of the size passed. Reading resets the kernel's
    // counters, hence the running total.
    let rc = unsafe {
        libc::getsockopt(
            s.fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut st).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        s.socket_drops
            .fetch_add(u64::from(st.tp_drops), Ordering::Relaxed);
    }
}

//! Packet parsing: Ethernet, up to two VLAN tags, IPv4/IPv6 and the TCP/UDP
//! destination port. Every read is bounds-checked against `data_end` right
//! before it happens, in the shape the verifier can follow.

use aya_ebpf::programs::XdpContext;

use crate::events::{self, Anomaly};

/// `port` of a packet whose TCP/UDP destination port is unknown: not TCP or
/// UDP, a non-first fragment, a truncated L4 header or unreadable IPv6
/// extension headers. Outside the u16 range so it never equals a ban's port.
pub const NO_PORT: u32 = u32::MAX;

/// Offsets past this are never read. Linear XDP data is at most a page, and
/// the verifier needs a bound on every variable packet offset.
const MAX_OFF: usize = 4096;

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ outer tag, still sent by some switches.
const ETH_P_QINQ_9100: u16 = 0x9100;
const VLAN_HLEN: usize = 4;

const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
/// More extension headers than this and the port is left unknown.
const MAX_EXT_HDRS: usize = 6;

const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

/// Source address of a parsed packet, pointing into the packet itself so the
/// exact-ban lookup can use it as the key without copying.
#[derive(Clone, Copy)]
pub enum Src {
    V4(*const [u8; 4]),
    V6(*const [u8; 16]),
}

#[derive(Clone, Copy)]
pub struct Packet {
    pub src: Src,
    /// TCP/UDP destination port in host order, or [`NO_PORT`].
    pub port: u32,
}

/// Why a packet carries no source address to judge.
#[derive(Clone, Copy)]
pub enum Skip {
    /// Neither IPv4 nor IPv6 (ARP, LLDP, ...): nothing a ban could name.
    NotIp,
    /// Claims to be IP (or VLAN) but cannot be read: passed and counted.
    Unparsed(Anomaly),
}

/// Pointer to a `T` at `off` bytes into the packet, if all of it lies
/// before `data_end`.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    if off > MAX_OFF {
        return None;
    }
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// The frame's length, for anomaly reports.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> u32 {
    (ctx.data_end() - ctx.data()) as u32
}

#[inline(always)]
fn u8_at(ctx: &XdpContext, off: usize) -> Option<u8> {
    // SAFETY: ptr_at checked that the byte lies inside the packet.
    ptr_at::<u8>(ctx, off).map(|p| unsafe { *p })
}

/// Big-endian u16 at `off`, returned in host order.
#[inline(always)]
fn be16_at(ctx: &XdpContext, off: usize) -> Option<u16> {
    // SAFETY: ptr_at checked both bytes; [u8; 2] has alignment 1.
    ptr_at::<[u8; 2]>(ctx, off).map(|p| u16::from_be_bytes(unsafe { *p }))
}

#[inline(always)]
const fn is_vlan(ethertype: u16) -> bool {
    matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_9100)
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Skip> {
    const L2: Skip = Skip::Unparsed(Anomaly::TruncatedL2);
    let mut proto = be16_at(ctx, 12).ok_or(L2)?;
    let mut off = ETH_HLEN;
    // Unrolled by hand: two tags at most (802.1ad outer + 802.1Q inner).
    if is_vlan(proto) {
        proto = be16_at(ctx, off + 2).ok_or(L2)?;
        off += VLAN_HLEN;
        if is_vlan(proto) {
            proto = be16_at(ctx, off + 2).ok_or(L2)?;
            off += VLAN_HLEN;
        }
    }
    match proto {
        ETH_P_IPV4 => parse_v4(ctx, off),
        ETH_P_IPV6 => parse_v6(ctx, off),
        p if is_vlan(p) => Err(Skip::Unparsed(Anomaly::VlanDepth)),
        _ => Err(Skip::NotIp),
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize) -> Result<Packet, Skip> {
    let hdr = ptr_at::<[u8; IPV4_HLEN]>(ctx, off).ok_or(Skip::Unparsed(Anomaly::TruncatedIp))?;
    // SAFETY: ptr_at checked the whole fixed header.
    let hdr = unsafe { &*hdr };
    if hdr[0] >> 4 != 4 {
        return Err(Skip::Unparsed(Anomaly::BadIpHeader));
    }
    let ihl = (hdr[0] & 0x0f) as usize;
    if ihl < 5 {
        return Err(Skip::Unparsed(Anomaly::BadIpHeader));
    }
    let src = (hdr as *const [u8; IPV4_HLEN])
        .cast::<u8>()
        .wrapping_add(12)
        .cast();
    // Only the first fragment (offset 0) carries the L4 header.
    let frag_off = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
    let port = if frag_off != 0 {
        NO_PORT
    } else {
        l4_port(ctx, hdr[9], off + ihl * 4)
    };
    Ok(Packet {
        src: Src::V4(src),
        port,
    })
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize) -> Result<Packet, Skip> {
    let hdr = ptr_at::<[u8; IPV6_HLEN]>(ctx, off).ok_or(Skip::Unparsed(Anomaly::TruncatedIp))?;
    // SAFETY: ptr_at checked the whole fixed header.
    let hdr = unsafe { &*hdr };
    if hdr[0] >> 4 != 6 {
        return Err(Skip::Unparsed(Anomaly::BadIpHeader));
    }
    let src = (hdr as *const [u8; IPV6_HLEN])
        .cast::<u8>()
        .wrapping_add(8)
        .cast();
    Ok(Packet {
        src: Src::V6(src),
        port: v6_port(ctx, hdr[6], off + IPV6_HLEN),
    })
}

/// Walks the IPv6 extension headers that may precede TCP/UDP. Anything
/// unexpected leaves the port unknown rather than failing the packet: the
/// source address is still good for bans that cover every port.
#[inline(always)]
fn v6_port(ctx: &XdpContext, mut next: u8, mut off: usize) -> u32 {
    for _ in 0..MAX_EXT_HDRS {
        match next {
            IPPROTO_TCP | IPPROTO_UDP => break,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some(h) = ptr_at::<[u8; 2]>(ctx, off) else {
                    return NO_PORT;
                };
                // SAFETY: ptr_at checked both bytes.
                let h = unsafe { *h };
                next = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            IPPROTO_AH => {
                let Some(h) = ptr_at::<[u8; 2]>(ctx, off) else {
                    return NO_PORT;
                };
                // SAFETY: ptr_at checked both bytes.
                let h = unsafe { *h };
                next = h[0];
                off += (h[1] as usize + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let Some(h) = ptr_at::<[u8; 8]>(ctx, off) else {
                    return NO_PORT;
                };
                // SAFETY: ptr_at checked the whole fragment header.
                let h = unsafe { *h };
                if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                    return NO_PORT;
                }
                next = h[0];
                off += 8;
            }
            _ => return NO_PORT,
        }
    }
    // The loop ends without a break only on an extension header still to
    // follow (the compiler folds this test into l4_port's own). A truncated
    // extension header inside the loop is not reported: a call there costs
    // IPv6 packets ~5 ns (registers kept across it), measured.
    if next != IPPROTO_TCP && next != IPPROTO_UDP {
        events::anomaly(Anomaly::LongExtChain, frame_len(ctx));
        return NO_PORT;
    }
    l4_port(ctx, next, off)
}

/// Destination port of a TCP or UDP header at `off`, only if the whole
/// minimal header is present: a truncated header is not trusted for a port.
#[inline(always)]
fn l4_port(ctx: &XdpContext, proto: u8, off: usize) -> u32 {
    let hlen = match proto {
        IPPROTO_TCP => TCP_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        _ => return NO_PORT,
    };
    // The ports come first in both headers; check the full header length.
    if u8_at(ctx, off + hlen - 1).is_none() {
        events::anomaly(Anomaly::TruncatedL4, frame_len(ctx));
        return NO_PORT;
    }
    match be16_at(ctx, off + 2) {
        Some(p) => p as u32,
        None => NO_PORT,
    }
}

//! Crafted frames: Ethernet, optional 802.1Q/802.1ad tags, IPv4 or IPv6, and
//! a TCP SYN or a small UDP datagram with correct checksums, so the receiving
//! kernel and any parser would accept them as real.

use std::net::IpAddr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ outer tag, still sent by some switches.
pub const ETH_P_QINQ_9100: u16 = 0x9100;
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// One VLAN tag as it appears on the wire, outermost first in [`Probe::vlans`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    pub vid: u16,
}

impl VlanTag {
    /// An 802.1Q customer tag.
    pub fn dot1q(vid: u16) -> Self {
        Self {
            tpid: ETH_P_8021Q,
            vid,
        }
    }
    /// An 802.1ad service (outer QinQ) tag.
    pub fn dot1ad(vid: u16) -> Self {
        Self {
            tpid: ETH_P_8021AD,
            vid,
        }
    }
}

/// A TCP SYN (or UDP datagram) from `src` to `dst:dport`. Source and
/// destination must be the same family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// [`IPPROTO_TCP`] (a SYN) or [`IPPROTO_UDP`] (4 bytes of payload).
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Outermost first.
    pub vlans: Vec<VlanTag>,
    /// Zero-pad the frame to at least this many bytes (Ethernet padding; the
    /// IP length fields still describe the real packet).
    pub min_len: usize,
    /// IPv4: this many 4-byte words of NOP options in the header (IHL 5 + n).
    /// IPv6: this many 8-byte Destination Options headers before the L4 header.
    pub ip_options: u8,
    /// Make this a fragment: (offset in bytes, a multiple of 8; more fragments
    /// follow). The L4 header then lies in the frame only at offset 0.
    pub fragment: Option<(u16, bool)>,
}

impl Probe {
    /// A TCP SYN.
    pub fn syn(src: IpAddr, dst: IpAddr, dport: u16) -> Self {
        Self {
            proto: IPPROTO_TCP,
            src,
            dst,
            sport: 40000,
            dport,
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            vlans: Vec::new(),
            min_len: 60,
            ip_options: 0,
            fragment: None,
        }
    }

    /// A UDP datagram with 4 bytes of payload.
    pub fn udp(src: IpAddr, dst: IpAddr, dport: u16) -> Self {
        Self {
            proto: IPPROTO_UDP,
            ..Self::syn(src, dst, dport)
        }
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    pub fn vlans(mut self, tags: &[VlanTag]) -> Self {
        self.vlans = tags.to_vec();
        self
    }

    /// See [`Probe::ip_options`]: what a parser must skip to find the ports.
    pub fn ip_options(mut self, n: u8) -> Self {
        self.ip_options = n;
        self
    }

    /// See [`Probe::fragment`].
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        self.fragment = Some((offset, more));
        self
    }

    pub fn min_len(mut self, len: usize) -> Self {
        self.min_len = len;
        self
    }

    /// The key a [`Receiver`](crate::Receiver) counts this packet under.
    pub fn key(&self) -> (IpAddr, u8, u16) {
        (self.src, self.proto, self.dport)
    }

    /// The frame as it goes on the wire (without FCS).
    ///
    /// # Panics
    /// If source and destination are of different families: a test bug.
    pub fn frame(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(96);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for tag in &self.vlans {
            f.extend_from_slice(&tag.tpid.to_be_bytes());
            f.extend_from_slice(&(tag.vid & 0x0fff).to_be_bytes());
        }
        let mut l4 = Vec::with_capacity(20);
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        // Where the checksum goes once the pseudo-header is known.
        let csum_at = if self.proto == IPPROTO_UDP {
            l4.extend_from_slice(&12u16.to_be_bytes()); // length: header + payload
            l4.extend_from_slice(&[0, 0]); // checksum
            l4.extend_from_slice(b"f2x!");
            6
        } else {
            l4.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // seq
            l4.extend_from_slice(&[0; 4]); // ack
            l4.push(5 << 4); // data offset: 5 words, no options
            l4.push(0x02); // SYN
            l4.extend_from_slice(&64240u16.to_be_bytes()); // window
            l4.extend_from_slice(&[0; 4]); // checksum, urgent pointer
            16
        };
        let l4_len = l4.len() as u16;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let hlen = 20 + 4 * usize::from(self.ip_options);
                let mut ip = vec![0x01u8; hlen]; // options: NOPs
                ip[..20].fill(0);
                ip[0] = 0x40 | (hlen / 4) as u8;
                ip[2..4].copy_from_slice(&(hlen as u16 + l4_len).to_be_bytes());
                match self.fragment {
                    None => ip[6] = 0x40, // DF
                    Some((offset, more)) => {
                        let field = (offset / 8) | if more { 0x2000 } else { 0 };
                        ip[4..6].copy_from_slice(&0x4242u16.to_be_bytes()); // id
                        ip[6..8].copy_from_slice(&field.to_be_bytes());
                    }
                }
                ip[8] = 64; // TTL
                ip[9] = self.proto;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let c = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                let mut pseudo = [0u8; 12];
                pseudo[0..4].copy_from_slice(&s.octets());
                pseudo[4..8].copy_from_slice(&d.octets());
                pseudo[9] = self.proto;
                pseudo[10..12].copy_from_slice(&l4_len.to_be_bytes());
                let c = checksum(&[&pseudo, &l4]);
                l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                let n = usize::from(self.ip_options);
                let frag = usize::from(self.fragment.is_some());
                let ext = 8 * (n + frag);
                let mut ip = vec![0u8; 40 + ext];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&(ext as u16 + l4_len).to_be_bytes());
                ip[6] = match (n, frag) {
                    (0, 0) => self.proto,
                    (0, _) => IPPROTO_FRAGMENT,
                    _ => IPPROTO_DSTOPTS,
                };
                ip[7] = 64; // hop limit
                ip[8..24].copy_from_slice(&s.octets());
                ip[24..40].copy_from_slice(&d.octets());
                for i in 0..n {
                    // Next header, length 0 (8 bytes), one PadN option filling the rest.
                    let next = if i + 1 < n {
                        IPPROTO_DSTOPTS
                    } else if frag > 0 {
                        IPPROTO_FRAGMENT
                    } else {
                        self.proto
                    };
                    let at = 40 + 8 * i;
                    ip[at..at + 8].copy_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                }
                if let Some((offset, more)) = self.fragment {
                    let at = 40 + 8 * n;
                    let field = (offset & 0xfff8) | u16::from(more);
                    ip[at] = self.proto;
                    ip[at + 2..at + 4].copy_from_slice(&field.to_be_bytes());
                    ip[at + 4..at + 8].copy_from_slice(&0x4242u32.to_be_bytes()); // id
                }
                let mut pseudo = [0u8; 40];
                pseudo[0..16].copy_from_slice(&s.octets());
                pseudo[16..32].copy_from_slice(&d.octets());
                pseudo[34..36].copy_from_slice(&l4_len.to_be_bytes());
                pseudo[39] = self.proto;
                let c = checksum(&[&pseudo, &l4]);
                // UDP over IPv6 must not carry a zero checksum.
                let c = if c == 0 && self.proto == IPPROTO_UDP {
                    0xffff
                } else {
                    c
                };
                l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            _ => panic!(
                "Probe with mixed address families: {} -> {}",
                self.src, self.dst
            ),
        }
        f.extend_from_slice(&l4);
        if f.len() < self.min_len {
            f.resize(self.min_len, 0);
        }
        f
    }
}

/// Internet checksum over the concatenation of `parts` (each of even length
/// except possibly the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Building blocks for frames no [`Probe`] describes: odd extension header
/// chains, wrong versions, lengths that lie, other protocols. Each returns
/// its bytes; the caller concatenates them (checksums are left zero where
/// the data plane does not read them).
pub mod raw {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Ethernet header with `tags` (TPIDs, VLAN ids 100, 101, ...), then `payload`.
    pub fn eth(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        for (i, tpid) in tags.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A TCP SYN header from port 40000 to `dport`.
    pub fn tcp(dport: u16) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&40000u16.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = 0x02;
        h
    }

    /// A UDP header from port 40000 to `dport`, no payload.
    pub fn udp(dport: u16) -> Vec<u8> {
        let mut h = vec![0u8; 8];
        h[0..2].copy_from_slice(&40000u16.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..6].copy_from_slice(&8u16.to_be_bytes());
        h
    }

    /// IPv4 header with `options` (a multiple of 4 bytes), `frag` = the
    /// 16-bit flags+offset field and a correct header checksum, then `l4`.
    pub fn ipv4(src: Ipv4Addr, proto: u8, options: &[u8], frag: u16, l4: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0, "IPv4 options come in 4-byte words");
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
        let c = super::checksum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(l4);
        h
    }

    /// IPv6 header whose next header is `next`, followed by `rest`
    /// (extension headers and L4, already chained by the caller).
    pub fn ipv6(src: Ipv6Addr, next: u8, rest: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
        h[6] = next;
        h[7] = 64;
        h[8..24].copy_from_slice(&src.octets());
        h[24..40].copy_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe).octets());
        h.extend_from_slice(rest);
        h
    }

    /// Hop-by-hop / routing / destination options header: (len + 1) * 8 bytes.
    pub fn opt_hdr(next: u8, len: u8) -> Vec<u8> {
        let mut h = vec![0u8; (len as usize + 1) * 8];
        h[0] = next;
        h[1] = len;
        h
    }

    /// Fragment header with fragment offset `off` (in 8-byte units).
    pub fn frag_hdr(next: u8, off: u16, more: bool) -> Vec<u8> {
        let mut h = vec![0u8; 8];
        h[0] = next;
        h[2..4].copy_from_slice(&((off << 3) | u16::from(more)).to_be_bytes());
        h[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        h
    }

    /// Authentication header: (len + 2) * 4 bytes.
    pub fn ah_hdr(next: u8, len: u8) -> Vec<u8> {
        let mut h = vec![0u8; (len as usize + 2) * 4];
        h[0] = next;
        h[1] = len;
        h
    }
}

/// Source address, protocol and destination port of a TCP or UDP frame,
/// skipping any VLAN tags still in the frame; `None` for anything else.
pub fn parse_l4(frame: &[u8]) -> Option<(IpAddr, u8, u16)> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    off += 2;
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
        off += 4;
    }
    let ip = frame.get(off..)?;
    let (src, proto, l4): (IpAddr, u8, &[u8]) = match ethertype {
        ETH_P_IP => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff != 0 {
                return None; // not the first fragment: no ports
            }
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            (IpAddr::from(s), *ip.get(9)?, ip.get(ihl..)?)
        }
        ETH_P_IPV6 => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let mut next = *ip.get(6)?;
            let mut at = 40;
            // Bounded walk over the extension headers a sender may put first.
            for _ in 0..8 {
                let hdr = ip.get(at..at + 8)?;
                match next {
                    IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                        at += (usize::from(hdr[1]) + 1) * 8;
                    }
                    IPPROTO_FRAGMENT => {
                        if u16::from_be_bytes([hdr[2], hdr[3]]) & 0xfff8 != 0 {
                            return None; // not the first fragment: no ports
                        }
                        at += 8;
                    }
                    _ => break,
                }
                next = hdr[0];
            }
            (IpAddr::from(s), next, ip.get(at..)?)
        }
        _ => return None,
    };
    let hdr = if proto == IPPROTO_TCP {
        20
    } else if proto == IPPROTO_UDP {
        8
    } else {
        return None;
    };
    if l4.len() < hdr {
        return None;
    }
    Some((src, proto, u16::from_be_bytes([l4[2], l4[3]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum_ok(parts: &[&[u8]]) -> bool {
        // A correct checksum makes the ones' complement sum of everything 0xffff.
        checksum(parts) == 0
    }

    #[test]
    fn ipv4_syn_checksums_verify() {
        let syn = Probe::syn(
            "198.51.100.7".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            25,
        );
        let f = syn.frame();
        assert_eq!(f.len(), 60); // 54 padded to the Ethernet minimum
        let ip = &f[14..34];
        assert!(sum_ok(&[ip]));
        let tcp = &f[34..54];
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&ip[12..16]);
        pseudo[4..8].copy_from_slice(&ip[16..20]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        assert!(sum_ok(&[&pseudo, tcp]));
        assert_eq!(parse_l4(&f), Some(syn.key()));
    }

    #[test]
    fn ipv6_syn_with_two_tags_parses_back() {
        let syn = Probe::syn(
            "2001:db8:1::7".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            587,
        )
        .vlans(&[VlanTag::dot1ad(100), VlanTag::dot1q(200)]);
        let f = syn.frame();
        assert_eq!(f.len(), 14 + 8 + 40 + 20);
        assert_eq!(&f[12..14], &[0x88, 0xa8]);
        assert_eq!(&f[16..18], &[0x81, 0x00]);
        let ip = &f[22..62];
        let tcp = &f[62..82];
        let mut pseudo = [0u8; 40];
        pseudo[0..32].copy_from_slice(&ip[8..40]);
        pseudo[35] = 20;
        pseudo[39] = 6;
        assert!(sum_ok(&[&pseudo, tcp]));
        assert_eq!(parse_l4(&f), Some(syn.key()));
    }

    #[test]
    fn udp_checksums_verify() {
        let p = Probe::udp(
            "2001:db8:1::7".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            53,
        );
        let f = p.frame();
        assert_eq!(f.len(), 14 + 40 + 12);
        let mut pseudo = [0u8; 40];
        pseudo[0..32].copy_from_slice(&f[22..54]);
        pseudo[35] = 12;
        pseudo[39] = IPPROTO_UDP;
        assert!(sum_ok(&[&pseudo, &f[54..]]));
        assert_eq!(parse_l4(&f), Some(p.key()));
        let p4 = Probe::udp(
            "198.51.100.7".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            53,
        );
        assert_eq!(parse_l4(&p4.frame()), Some((p4.src, IPPROTO_UDP, 53)));
    }

    #[test]
    fn options_and_extension_headers_are_well_formed() {
        let v4 = Probe::syn(
            "198.51.100.7".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            25,
        )
        .ip_options(3);
        let f = v4.frame();
        assert_eq!(f[14], 0x48);
        assert!(sum_ok(&[&f[14..46]]));
        assert_eq!(parse_l4(&f), Some(v4.key()));
        let v6 = Probe::syn(
            "2001:db8:1::7".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            25,
        )
        .ip_options(2);
        let f = v6.frame();
        assert_eq!(f.len(), 14 + 40 + 16 + 20);
        assert_eq!(
            (f[14 + 6], f[54], f[62]),
            (IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_TCP)
        );
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 36);
        assert_eq!(parse_l4(&f), Some(v6.key()));
    }

    #[test]
    fn fragments_carry_ports_only_at_offset_zero() {
        for src in ["198.51.100.7", "2001:db8:1::7"] {
            let src: IpAddr = src.parse().unwrap();
            let dst: IpAddr = if src.is_ipv4() {
                "192.0.2.2"
            } else {
                "2001:db8::2"
            }
            .parse()
            .unwrap();
            let first = Probe::syn(src, dst, 25).fragment(0, true);
            assert_eq!(parse_l4(&first.frame()), Some(first.key()));
            let later = Probe::syn(src, dst, 25).fragment(64, false);
            assert_eq!(parse_l4(&later.frame()), None);
        }
        let f = Probe::syn(
            "198.51.100.7".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            25,
        )
        .fragment(64, true)
        .frame();
        assert_eq!(&f[20..22], &[0x20, 8]);
        assert!(sum_ok(&[&f[14..34]]));
    }

    #[test]
    fn known_checksum_vector() {
        // RFC 1071 style example: the classic IPv4 header from Wikipedia.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&hdr]), 0xb861);
    }

    #[test]
    fn only_tcp_and_udp_are_counted() {
        let mut f = Probe::syn(
            "198.51.100.7".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            25,
        )
        .frame();
        f[14 + 9] = 1; // ICMP
        assert_eq!(parse_l4(&f), None);
        assert_eq!(parse_l4(&f[..10]), None);
    }
}

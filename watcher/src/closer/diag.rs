//! The kernel side of closing connections: sock_diag netlink. One dump of
//! this network namespace's TCP sockets per family (SOCK_DIAG_BY_FAMILY),
//! then SOCK_DESTROY for each socket whose peer is banned, by the exact id
//! the dump gave (ports, addresses, interface, cookie): what `ss -K` does.
//! The kernel aborts the socket as if reset (the process holding it sees
//! ECONNABORTED) and sends the peer a RST. Needs CONFIG_INET_DIAG_DESTROY
//! and CAP_NET_ADMIN in the namespace.
use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;

use crate::{addr::PortSet, enforcer::netlink::Socket};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
/// struct inet_diag_sockid: sport, dport, src[16], dst[16], if, cookie[2].
const SOCKID_LEN: usize = 48;
/// struct inet_diag_req_v2: family, protocol, ext, pad, states, sockid.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// struct inet_diag_msg up to and including its sockid.
const MSG_MIN: usize = 4 + SOCKID_LEN;

/// TCP states closed: a peer that is talking or has just connected.
/// Closing states (FIN_WAIT, TIME_WAIT, LAST_ACK) end on their own.
const TCP_ESTABLISHED: u32 = 1;
const TCP_SYN_RECV: u32 = 3;
const TCP_CLOSE_WAIT: u32 = 8;
const TCP_NEW_SYN_RECV: u32 = 12;
const STATES: u32 =
    1 << TCP_ESTABLISHED | 1 << TCP_SYN_RECV | 1 << TCP_CLOSE_WAIT | 1 << TCP_NEW_SYN_RECV;

/// A ban whose open connections go: its network and the local ports it
/// covers (all ports when empty, as in the data plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub net: IpNet,
    pub ports: PortSet,
}

impl Target {
    fn covers(&self, peer: IpAddr, local_port: u16) -> bool {
        self.net.contains(&peer) && (self.ports.is_all() || self.ports.0.contains(&local_port))
    }
}

/// The targets by network, and the prefix lengths among them: a socket is
/// matched with one lookup per length present, whatever the number of
/// targets (a CrowdSec pull can ban thousands at once).
struct Index<'a> {
    targets: &'a [Target],
    lens: Vec<(bool, u8)>,
    by_net: HashMap<IpNet, Vec<usize>>,
}

impl<'a> Index<'a> {
    fn new(targets: &'a [Target]) -> Self {
        let mut by_net: HashMap<IpNet, Vec<usize>> = HashMap::new();
        let mut lens = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let net = t.net.trunc();
            let len = (net.addr().is_ipv6(), net.prefix_len());
            if !lens.contains(&len) {
                lens.push(len);
            }
            by_net.entry(net).or_default().push(i);
        }
        Index {
            targets,
            lens,
            by_net,
        }
    }

    /// The first target covering this socket.
    fn find(&self, peer: IpAddr, local_port: u16) -> Option<usize> {
        for &(v6, len) in &self.lens {
            if v6 != peer.is_ipv6() {
                continue;
            }
            let Ok(net) = IpNet::new(peer, len) else {
                continue;
            };
            if let Some(ids) = self.by_net.get(&net.trunc())
                && let Some(&i) = ids
                    .iter()
                    .find(|&&i| self.targets[i].covers(peer, local_port))
            {
                return Some(i);
            }
        }
        None
    }
}

/// A socket as the dump gave it: its id (sent back to destroy it) and its
/// peer.
struct Found {
    family: u8,
    id: [u8; SOCKID_LEN],
    peer: IpAddr,
    local_port: u16,
}

/// A sock_diag netlink socket.
pub struct Diag(Socket);

impl Diag {
    pub fn open() -> io::Result<Self> {
        Socket::open_protocol(NETLINK_SOCK_DIAG).map(Diag)
    }

    /// Closes every open TCP connection a target covers; returns how many
    /// each target closed (same order). A socket that ended between the
    /// dump and its destroy is not counted.
    pub fn close(&self, targets: &[Target]) -> io::Result<Vec<u32>> {
        let mut closed = vec![0u32; targets.len()];
        let index = Index::new(targets);
        for (family, v6) in [(libc::AF_INET as u8, false), (libc::AF_INET6 as u8, true)] {
            // IPv4 peers of a dual-stack listener are in the IPv6 dump as
            // mapped addresses, so the IPv6 dump runs for IPv4 targets too.
            if v6 || targets.iter().any(|t| t.net.addr().is_ipv4()) {
                for s in self.dump(family)? {
                    let Some(i) = index.find(s.peer, s.local_port) else {
                        continue;
                    };
                    if self.destroy(&s)? {
                        closed[i] += 1;
                    }
                }
            }
        }
        Ok(closed)
    }

    fn dump(&self, family: u8) -> io::Result<Vec<Found>> {
        self.0.send(&request(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            family,
            &[0; SOCKID_LEN],
        ))?;
        let mut found = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.0.recv(&mut buf)?;
            for m in messages(&buf[..n]) {
                match m.ty {
                    NLMSG_DONE => return Ok(found),
                    NLMSG_ERROR => {
                        return Err(error_of(m.body)
                            .unwrap_or_else(|| io::Error::other("sock_diag dump failed")));
                    }
                    SOCK_DIAG_BY_FAMILY => found.extend(parse_socket(m.body)),
                    _ => {}
                }
            }
            if n == 0 {
                return Ok(found);
            }
        }
    }

    /// Destroys one socket; false when it was already gone.
    fn destroy(&self, s: &Found) -> io::Result<bool> {
        self.0.send(&request(
            SOCK_DESTROY,
            NLM_F_REQUEST | NLM_F_ACK,
            s.family,
            &s.id,
        ))?;
        let mut buf = [0u8; 512];
        let n = self.0.recv(&mut buf)?;
        for m in messages(&buf[..n]) {
            if m.ty == NLMSG_ERROR {
                return match error_of(m.body) {
                    None => Ok(true),
                    // Gone meanwhile (closed, or already destroyed).
                    Some(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
                    Some(e) => Err(e),
                };
            }
        }
        Err(io::Error::other("no answer to SOCK_DESTROY"))
    }
}

fn request(ty: u16, flags: u16, family: u8, id: &[u8; SOCKID_LEN]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + REQ_LEN;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&STATES.to_ne_bytes());
    m.extend_from_slice(id);
    m
}

struct Message<'a> {
    ty: u16,
    body: &'a [u8],
}

/// The netlink messages of one datagram; a truncated one ends the walk.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let len = u32::from_ne_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(buf.get(4..6)?.try_into().ok()?);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let body = &buf[NLMSG_HDRLEN..len];
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some(Message { ty, body })
    })
}

/// The error an NLMSG_ERROR carries; None for an acknowledgement (0).
fn error_of(body: &[u8]) -> Option<io::Error> {
    let code = i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?);
    (code != 0).then(|| io::Error::from_raw_os_error(-code))
}

/// One inet_diag_msg: family, state, timer, retrans, then the sockid.
fn parse_socket(body: &[u8]) -> Option<Found> {
    if body.len() < MSG_MIN {
        return None;
    }
    let family = body[0];
    let id: [u8; SOCKID_LEN] = body[4..4 + SOCKID_LEN].try_into().ok()?;
    let local_port = u16::from_be_bytes([id[0], id[1]]);
    let dst = &id[20..36];
    let peer = if family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3]))
    } else {
        let a = Ipv6Addr::from(<[u8; 16]>::try_from(dst).ok()?);
        a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4)
    };
    Some(Found {
        family,
        id,
        peer,
        local_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(net: &str, ports: &[u16]) -> Target {
        Target {
            net: net.parse().unwrap(),
            ports: PortSet(ports.to_vec()),
        }
    }

    #[test]
    fn targets_cover_their_network_and_ports_only() {
        let all = target("192.0.2.0/24", &[]);
        assert!(all.covers("192.0.2.9".parse().unwrap(), 2525));
        assert!(!all.covers("192.0.3.9".parse().unwrap(), 2525));
        let smtp = target("2001:db8::/64", &[25, 587]);
        assert!(smtp.covers("2001:db8::7".parse().unwrap(), 587));
        assert!(!smtp.covers("2001:db8::7".parse().unwrap(), 993));
        assert!(!smtp.covers("2001:db8:1::7".parse().unwrap(), 25));
    }

    #[test]
    fn the_index_finds_the_covering_target_among_many() {
        let mut targets: Vec<Target> = (0..10_000u32)
            .map(|i| target(&format!("{}/32", Ipv4Addr::from(0x0a00_0000 + i)), &[]))
            .collect();
        targets.push(target("2001:db8:7::/48", &[993]));
        targets.push(target("198.51.100.0/24", &[25]));
        let ix = Index::new(&targets);
        assert_eq!(ix.find("10.0.0.9".parse().unwrap(), 1), Some(9));
        assert_eq!(ix.find("10.0.39.15".parse().unwrap(), 1), Some(9_999));
        assert_eq!(ix.find("10.0.39.16".parse().unwrap(), 1), None);
        assert_eq!(
            ix.find("2001:db8:7:1::5".parse().unwrap(), 993),
            Some(10_000)
        );
        assert_eq!(ix.find("2001:db8:7:1::5".parse().unwrap(), 25), None);
        assert_eq!(ix.find("198.51.100.200".parse().unwrap(), 25), Some(10_001));
        assert_eq!(ix.find("198.51.100.200".parse().unwrap(), 26), None);
    }

    #[test]
    fn a_mapped_peer_reads_as_ipv4_and_bad_messages_as_nothing() {
        let mut body = vec![0u8; MSG_MIN + 20];
        body[0] = libc::AF_INET6 as u8;
        body[4..6].copy_from_slice(&25u16.to_be_bytes());
        body[4 + 20 + 10] = 0xff;
        body[4 + 20 + 11] = 0xff;
        body[4 + 20 + 12..4 + 20 + 16].copy_from_slice(&[198, 51, 100, 7]);
        let f = parse_socket(&body).unwrap();
        assert_eq!(f.peer, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(f.local_port, 25);
        assert!(parse_socket(&body[..MSG_MIN - 1]).is_none());
        // A header claiming more than the datagram holds ends the walk.
        let mut dgram = vec![0u8; 20];
        dgram[0..4].copy_from_slice(&400u32.to_ne_bytes());
        assert_eq!(messages(&dgram).count(), 0);
        assert_eq!(messages(&[1, 2, 3]).count(), 0);
    }
}

//! Which XDP program an interface runs and in which mode (the link info
//! does not say): one RTM_GETLINK request and the IFLA_XDP attributes of
//! the answer; and the one netlink write libxdp's dispatcher protocol
//! needs, an atomic replace of the program attached without a link.
use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
const NLA_F_NESTED: u16 = 1 << 15;
pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub const XDP_FLAGS_REPLACE: u32 = 1 << 4;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttached {
    None,
    Driver,
    Generic,
    Offload,
}

#[repr(C)]
struct Request {
    nlh: libc::nlmsghdr,
    ifi: libc::ifinfomsg,
}

/// A netlink socket of one family (route here; sock_diag for the
/// connection closer), closed on drop.
pub(crate) struct Socket(std::os::fd::OwnedFd);

impl Socket {
    /// A route socket.
    fn open() -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_ROUTE)
    }

    pub(crate) fn open_protocol(protocol: libc::c_int) -> io::Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: plain socket(2); the fd is owned right away.
        let s = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `s` is a fresh descriptor nobody else owns.
        Ok(Socket(unsafe { std::os::fd::OwnedFd::from_raw_fd(s) }))
    }

    pub(crate) fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: `msg` is a valid buffer of its length.
        if unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One datagram into `buf`; its length.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid, writable buffer of its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends one request and returns the first answer.
    fn ask(&self, msg: &[u8]) -> io::Result<Vec<u8>> {
        self.send(msg)?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = self.recv(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

fn getlink(ifindex: u32) -> io::Result<Vec<u8>> {
    // SAFETY: Request is plain data; all-zero is a valid start.
    let mut req: Request = unsafe { std::mem::zeroed() };
    req.nlh.nlmsg_len = size_of::<Request>() as u32;
    req.nlh.nlmsg_type = libc::RTM_GETLINK;
    req.nlh.nlmsg_flags = libc::NLM_F_REQUEST as u16;
    req.nlh.nlmsg_seq = 1;
    req.ifi.ifi_family = libc::AF_UNSPEC as u8;
    req.ifi.ifi_index = ifindex as i32;
    // SAFETY: Request is repr(C) plain data; its bytes may be read.
    let bytes =
        unsafe { std::slice::from_raw_parts((&raw const req).cast::<u8>(), size_of::<Request>()) };
    Socket::open()?.ask(bytes)
}

/// The mode in which program `prog_id` is attached to `ifindex`.
pub fn xdp_mode(ifindex: u32, prog_id: u32) -> io::Result<XdpAttached> {
    parse(&getlink(ifindex)?, prog_id)
}

/// The program attached to `ifindex` (native mode preferred, as libxdp
/// reads it) and its mode; `None` when there is none.
pub fn xdp_prog(ifindex: u32) -> io::Result<Option<(XdpAttached, u32)>> {
    let msg = getlink(ifindex)?;
    let (mut attached, mut one, mut drv, mut skb) = (0u8, 0u32, 0u32, 0u32);
    each_xdp_attr(&msg, |t, v| match t {
        IFLA_XDP_ATTACHED => attached = v.first().copied().unwrap_or(0),
        IFLA_XDP_PROG_ID => one = u32_at(v, 0).unwrap_or(0),
        IFLA_XDP_DRV_PROG_ID => drv = u32_at(v, 0).unwrap_or(0),
        IFLA_XDP_SKB_PROG_ID => skb = u32_at(v, 0).unwrap_or(0),
        _ => {}
    })?;
    Ok(match attached {
        XDP_ATTACHED_DRV => Some((XdpAttached::Driver, one)),
        XDP_ATTACHED_SKB => Some((XdpAttached::Generic, one)),
        XDP_ATTACHED_MULTI if drv != 0 => Some((XdpAttached::Driver, drv)),
        XDP_ATTACHED_MULTI if skb != 0 => Some((XdpAttached::Generic, skb)),
        _ => None,
    })
}

/// Attaches `prog` to `ifindex` (without a link, as libxdp does) or, with
/// `prog: None`, detaches; `expected` is the program that must be there
/// now (the swap fails with EEXIST if another took its place), `None`
/// when there must be none.
pub fn xdp_set(
    ifindex: u32,
    prog: Option<BorrowedFd<'_>>,
    expected: Option<BorrowedFd<'_>>,
    mode_flags: u32,
) -> io::Result<()> {
    let mut nested = Vec::new();
    let fd = prog.map_or(-1, |p| p.as_raw_fd());
    attr(&mut nested, IFLA_XDP_FD, &fd.to_ne_bytes());
    let flags = mode_flags
        | match expected {
            Some(_) => XDP_FLAGS_REPLACE,
            None => XDP_FLAGS_UPDATE_IF_NOEXIST,
        };
    attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    if let Some(e) = expected {
        attr(
            &mut nested,
            IFLA_XDP_EXPECTED_FD,
            &e.as_raw_fd().to_ne_bytes(),
        );
    }
    let mut body = Vec::new();
    attr(&mut body, IFLA_XDP | NLA_F_NESTED, &nested);
    // SAFETY: Request is plain data; all-zero is a valid start.
    let mut req: Request = unsafe { std::mem::zeroed() };
    req.nlh.nlmsg_len = (size_of::<Request>() + body.len()) as u32;
    req.nlh.nlmsg_type = libc::RTM_SETLINK;
    req.nlh.nlmsg_flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    req.nlh.nlmsg_seq = 2;
    req.ifi.ifi_family = libc::AF_UNSPEC as u8;
    req.ifi.ifi_index = ifindex as i32;
    // SAFETY: Request is repr(C) plain data; its bytes may be read.
    let head =
        unsafe { std::slice::from_raw_parts((&raw const req).cast::<u8>(), size_of::<Request>()) };
    let mut msg = head.to_vec();
    msg.extend_from_slice(&body);
    let ans = Socket::open()?.ask(&msg)?;
    let hdr = size_of::<libc::nlmsghdr>();
    match (u16_at(&ans, 4), u32_at(&ans, hdr)) {
        (Some(t), Some(0)) if t == libc::NLMSG_ERROR as u16 => Ok(()),
        (Some(t), Some(e)) if t == libc::NLMSG_ERROR as u16 => {
            Err(io::Error::from_raw_os_error(-(e as i32)))
        }
        _ => Err(io::Error::other("unexpected netlink answer")),
    }
}

/// Appends one rtattr, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (len.next_multiple_of(4) - len), 0);
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Walks rtattrs in `b`, calling `f(type, payload)`.
fn attrs(b: &[u8], mut f: impl FnMut(u16, &[u8])) {
    let mut o = 0;
    while let (Some(len), Some(ty)) = (u16_at(b, o), u16_at(b, o + 2)) {
        let len = len as usize;
        if len < 4 || o + len > b.len() {
            break;
        }
        f(ty & 0x3fff, &b[o + 4..o + len]);
        o += (len + 3) & !3;
    }
}

/// Calls `f` on each attribute nested in the IFLA_XDP attribute of a
/// RTM_NEWLINK answer.
fn each_xdp_attr(msg: &[u8], mut f: impl FnMut(u16, &[u8])) -> io::Result<()> {
    let hdr = size_of::<libc::nlmsghdr>();
    let ty = u16_at(msg, 4).ok_or_else(|| io::Error::other("short netlink answer"))?;
    if ty == libc::NLMSG_ERROR as u16 {
        let errno = u32_at(msg, hdr).unwrap_or(0) as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let len = (u32_at(msg, 0).unwrap_or(0) as usize).min(msg.len());
    let start = hdr + size_of::<libc::ifinfomsg>();
    attrs(msg.get(start..len).unwrap_or(&[]), |t, p| {
        if t == IFLA_XDP {
            attrs(p, &mut f);
        }
    });
    Ok(())
}

fn parse(msg: &[u8], prog_id: u32) -> io::Result<XdpAttached> {
    let (mut attached, mut drv, mut skb) = (0u8, 0u32, 0u32);
    let mut seen = false;
    each_xdp_attr(msg, |t, v| {
        seen = true;
        match t {
            IFLA_XDP_ATTACHED => attached = v.first().copied().unwrap_or(0),
            IFLA_XDP_DRV_PROG_ID => drv = u32_at(v, 0).unwrap_or(0),
            IFLA_XDP_SKB_PROG_ID => skb = u32_at(v, 0).unwrap_or(0),
            _ => {}
        }
    })?;
    let mut out = XdpAttached::None;
    if seen {
        out = match attached {
            XDP_ATTACHED_DRV => XdpAttached::Driver,
            XDP_ATTACHED_SKB => XdpAttached::Generic,
            XDP_ATTACHED_HW => XdpAttached::Offload,
            XDP_ATTACHED_MULTI if drv == prog_id => XdpAttached::Driver,
            XDP_ATTACHED_MULTI if skb == prog_id => XdpAttached::Generic,
            _ => XdpAttached::None,
        };
    }
    Ok(out)
}

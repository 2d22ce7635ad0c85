//! Which XDP mode an interface runs (the link info does not say): one
//! RTM_GETLINK request and the IFLA_XDP attributes of the answer.
use std::{io, mem::size_of};

const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
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

/// The mode in which program `prog_id` is attached to `ifindex`.
pub fn xdp_mode(ifindex: u32, prog_id: u32) -> io::Result<XdpAttached> {
    // SAFETY: plain socket calls on an fd we own and close; buffers are ours.
    unsafe {
        let s = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = query(s, ifindex, prog_id);
        libc::close(s);
        r
    }
}

unsafe fn query(s: i32, ifindex: u32, prog_id: u32) -> io::Result<XdpAttached> {
    let mut req: Request = unsafe { std::mem::zeroed() };
    req.nlh.nlmsg_len = size_of::<Request>() as u32;
    req.nlh.nlmsg_type = libc::RTM_GETLINK;
    req.nlh.nlmsg_flags = libc::NLM_F_REQUEST as u16;
    req.nlh.nlmsg_seq = 1;
    req.ifi.ifi_family = libc::AF_UNSPEC as u8;
    req.ifi.ifi_index = ifindex as i32;
    let p = &req as *const Request as *const libc::c_void;
    if unsafe { libc::send(s, p, size_of::<Request>(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let n = unsafe { libc::recv(s, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse(&buf[..n as usize], prog_id)
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

fn parse(msg: &[u8], prog_id: u32) -> io::Result<XdpAttached> {
    let hdr = size_of::<libc::nlmsghdr>();
    let ty = u16_at(msg, 4).ok_or_else(|| io::Error::other("short netlink answer"))?;
    if ty == libc::NLMSG_ERROR as u16 {
        let errno = u32_at(msg, hdr).unwrap_or(0) as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let len = (u32_at(msg, 0).unwrap_or(0) as usize).min(msg.len());
    let start = hdr + size_of::<libc::ifinfomsg>();
    let mut out = XdpAttached::None;
    attrs(msg.get(start..len).unwrap_or(&[]), |t, p| {
        if t != IFLA_XDP {
            return;
        }
        let (mut attached, mut drv, mut skb) = (0u8, 0u32, 0u32);
        attrs(p, |t, v| match t {
            IFLA_XDP_ATTACHED => attached = v.first().copied().unwrap_or(0),
            IFLA_XDP_DRV_PROG_ID => drv = u32_at(v, 0).unwrap_or(0),
            IFLA_XDP_SKB_PROG_ID => skb = u32_at(v, 0).unwrap_or(0),
            _ => {}
        });
        out = match attached {
            XDP_ATTACHED_DRV => XdpAttached::Driver,
            XDP_ATTACHED_SKB => XdpAttached::Generic,
            XDP_ATTACHED_HW => XdpAttached::Offload,
            XDP_ATTACHED_MULTI if drv == prog_id => XdpAttached::Driver,
            XDP_ATTACHED_MULTI if skb == prog_id => XdpAttached::Generic,
            _ => XdpAttached::None,
        };
    });
    Ok(out)
}

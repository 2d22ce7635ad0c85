//! Raw bpf(2) calls aya does not offer: batch dumps, plain element operations
//! on map fds with our own flags, program, map, link and BTF info, XDP and
//! freplace links, forced link detach.
use std::{
    ffi::CString,
    io,
    mem::{MaybeUninit, size_of},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::Pod;

const BPF_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_MAP_GET_NEXT_KEY: i32 = 4;
const BPF_OBJ_GET: i32 = 7;
const BPF_OBJ_GET_INFO_BY_FD: i32 = 15;
const BPF_MAP_LOOKUP_BATCH: i32 = 24;
const BPF_LINK_DETACH: i32 = 34;

const ENOTSUPP: i32 = 524;

pub const BPF_ANY: u64 = 0;

/// The `union bpf_attr` members we use; the kernel accepts a shorter attr
/// as long as the bytes it does not know are absent or zero.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_link_info` up to the XDP member of its union (offset 16).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct LinkInfo {
    pub type_: u32,
    pub id: u32,
    pub prog_id: u32,
    _pad: u32,
    /// For XDP links: the ifindex (0 once the device is gone).
    pub xdp_ifindex: u32,
    _rest: [u32; 11],
}

pub const BPF_LINK_TYPE_XDP: u32 = 6;

fn bpf<A>(cmd: i32, attr: &mut A) -> io::Result<i64> {
    // SAFETY: `attr` is a repr(C) prefix of union bpf_attr for `cmd`, and every
    // pointer inside it refers to live buffers of the sizes the map expects.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn lookup<K: Pod, V: Pod>(fd: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    let mut v = MaybeUninit::<V>::zeroed();
    let mut a = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key as *const K as u64,
        value: v.as_mut_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut a) {
        // SAFETY: the kernel filled all size_of::<V>() bytes; V is Pod.
        Ok(_) => Ok(Some(unsafe { v.assume_init() })),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn update<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    key: &K,
    value: &V,
    flags: u64,
) -> io::Result<()> {
    let mut a = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key as *const K as u64,
        value: value as *const V as u64,
        flags,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
}

fn next_key<K: Pod>(fd: BorrowedFd<'_>, key: Option<&K>) -> io::Result<Option<K>> {
    let mut next = MaybeUninit::<K>::zeroed();
    let mut a = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key.map_or(0, |k| k as *const K as u64),
        value: next.as_mut_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut a) {
        // SAFETY: the kernel wrote a whole key; K is Pod.
        Ok(_) => Ok(Some(unsafe { next.assume_init() })),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every (key, value) of a hash map.
pub fn dump<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    walk::<K, V>(fd, |k, v| out.push((*k, *v)))?;
    Ok(out)
}

/// Number of entries (hash maps keep no count).
pub fn count<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n = 0;
    walk::<K, V>(fd, |_, _| n += 1)?;
    Ok(n)
}

/// Calls `f` on every entry: BPF_MAP_LOOKUP_BATCH, or GET_NEXT_KEY +
/// LOOKUP where batches are not supported.
pub fn walk<K: Pod, V: Pod>(fd: BorrowedFd<'_>, mut f: impl FnMut(&K, &V)) -> io::Result<()> {
    const CHUNK: usize = 8192;
    let mut keys: Vec<K> = Vec::with_capacity(CHUNK);
    let mut vals: Vec<V> = Vec::with_capacity(CHUNK);
    let mut token: u64 = 0;
    let mut first = true;
    loop {
        let mut a = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token as *mut u64 as u64
            },
            out_batch: &mut token as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: vals.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut a);
        let n = (a.count as usize).min(CHUNK);
        if let Err(e) = &r {
            match e.raw_os_error() {
                // ENOENT: the walk is complete; the last chunk still counts.
                Some(libc::ENOENT) => {}
                Some(libc::EINVAL | ENOTSUPP) if first => return walk_slow(fd, f),
                _ => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("BPF_MAP_LOOKUP_BATCH: {e}"),
                    ));
                }
            }
        }
        // SAFETY: the kernel initialized the first `n` keys and values.
        unsafe {
            keys.set_len(n);
            vals.set_len(n);
        }
        for (k, v) in keys.iter().zip(vals.iter()) {
            f(k, v);
        }
        keys.clear();
        vals.clear();
        if r.is_err() {
            return Ok(());
        }
        first = false;
    }
}

fn walk_slow<K: Pod, V: Pod>(fd: BorrowedFd<'_>, mut f: impl FnMut(&K, &V)) -> io::Result<()> {
    let mut cur = next_key::<K>(fd, None)?;
    while let Some(k) = cur {
        // An entry deleted between the two calls is simply skipped.
        if let Some(v) = lookup::<K, V>(fd, &k)? {
            f(&k, &v);
        }
        cur = next_key(fd, Some(&k))?;
    }
    Ok(())
}

/// Opens a pinned object (map, link, program).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in pin path"))?;
    let mut a = ObjAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut a)?;
    // SAFETY: BPF_OBJ_GET returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = LinkInfo::default();
    let mut a = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<LinkInfo>() as u32,
        info: &mut info as *mut LinkInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(info)
}

/// Detaches a link from its hook even if other processes still hold it.
pub fn link_detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut a = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_LINK_DETACH, &mut a).map(drop)
}

const BPF_OBJ_PIN: i32 = 6;
const BPF_LINK_CREATE: i32 = 28;
const BPF_LINK_UPDATE: i32 = 29;
const BPF_XDP: u32 = 37;
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
#[derive(Default)]
struct LinkAttr {
    a: u32,
    b: u32,
    c: u32,
    d: u32,
}

/// BPF_LINK_CREATE for XDP on `ifindex`. Done here rather than through aya,
/// whose attach silently falls back to a netlink attachment that cannot be
/// pinned; we want the kernel's real answer (EOPNOTSUPP, EBUSY...).
pub fn xdp_link_create(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut a = LinkAttr {
        a: prog.as_raw_fd() as u32,
        b: ifindex,
        c: BPF_XDP,
        d: flags,
    };
    let fd = bpf(BPF_LINK_CREATE, &mut a)?;
    // SAFETY: BPF_LINK_CREATE returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Atomically swaps the program behind a link (no window without XDP).
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut a = LinkAttr {
        a: link.as_raw_fd() as u32,
        b: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_LINK_UPDATE, &mut a).map(drop)
}

pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in pin path"))?;
    let mut a = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_OBJ_PIN, &mut a).map(drop)
}

const BPF_PROG_GET_FD_BY_ID: i32 = 13;
const BPF_MAP_GET_FD_BY_ID: i32 = 14;
const BPF_BTF_GET_FD_BY_ID: i32 = 19;

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

fn get_fd_by_id(cmd: i32, id: u32) -> io::Result<OwnedFd> {
    let mut a = GetFdAttr {
        id,
        ..Default::default()
    };
    let fd = bpf(cmd, &mut a)?;
    // SAFETY: the command returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    get_fd_by_id(BPF_PROG_GET_FD_BY_ID, id)
}

pub fn map_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    get_fd_by_id(BPF_MAP_GET_FD_BY_ID, id)
}

pub fn btf_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    get_fd_by_id(BPF_BTF_GET_FD_BY_ID, id)
}

/// `struct bpf_prog_info` up to `btf_id` (the kernel fills what fits).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct ProgInfo {
    pub type_: u32,
    pub id: u32,
    pub tag: [u8; 8],
    _jited_len: u32,
    _xlated_len: u32,
    _jited_insns: u64,
    _xlated_insns: u64,
    _load_time: u64,
    _uid: u32,
    pub nr_map_ids: u32,
    pub map_ids: u64,
    pub name: [u8; 16],
    _ifindex: u32,
    _gpl: u32,
    _netns_dev: u64,
    _netns_ino: u64,
    _nr_jited_ksyms: u32,
    _nr_jited_func_lens: u32,
    _jited_ksyms: u64,
    _jited_func_lens: u64,
    pub btf_id: u32,
    _rest: [u32; 31],
}

impl ProgInfo {
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// Program info, and the ids of the first `max_maps` maps it uses.
pub fn prog_info(fd: BorrowedFd<'_>, max_maps: usize) -> io::Result<(ProgInfo, Vec<u32>)> {
    let mut ids = vec![0u32; max_maps];
    let mut info = ProgInfo {
        nr_map_ids: max_maps as u32,
        map_ids: if max_maps > 0 {
            ids.as_mut_ptr() as u64
        } else {
            0
        },
        ..Default::default()
    };
    let mut a = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    ids.truncate((info.nr_map_ids as usize).min(max_maps));
    Ok((info, ids))
}

/// `struct bpf_map_info` up to `map_flags`.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct MapInfo {
    pub type_: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    _rest: [u32; 20],
}

pub fn map_info(fd: BorrowedFd<'_>) -> io::Result<MapInfo> {
    let mut info = MapInfo::default();
    let mut a = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<MapInfo>() as u32,
        info: &mut info as *mut MapInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(info)
}

#[repr(C)]
#[derive(Default)]
struct BtfInfo {
    btf: u64,
    btf_size: u32,
    id: u32,
    name: u64,
    name_len: u32,
    kernel_btf: u32,
}

/// The raw BTF of a program, as the kernel holds it.
pub fn prog_btf(prog: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let (info, _) = prog_info(prog, 0)?;
    if info.btf_id == 0 {
        return Err(io::Error::other("the program has no BTF"));
    }
    let btf = btf_fd_by_id(info.btf_id)?;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut bi = BtfInfo {
            btf: buf.as_mut_ptr() as u64,
            btf_size: buf.len() as u32,
            ..Default::default()
        };
        let mut a = InfoAttr {
            bpf_fd: btf.as_raw_fd() as u32,
            info_len: size_of::<BtfInfo>() as u32,
            info: &mut bi as *mut BtfInfo as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
        if bi.btf_size as usize <= buf.len() {
            buf.truncate(bi.btf_size as usize);
            return Ok(buf);
        }
        buf = vec![0u8; bi.btf_size as usize];
    }
}

#[repr(C)]
#[derive(Default)]
struct FreplaceLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    target_btf_id: u32,
    _pad: u32,
}

/// Attaches extension program `prog` in place of function `btf_id` of
/// program `target` (BPF_LINK_CREATE, attach type 0).
pub fn freplace_link(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    btf_id: u32,
) -> io::Result<OwnedFd> {
    let mut a = FreplaceLinkAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: target.as_raw_fd() as u32,
        target_btf_id: btf_id,
        ..Default::default()
    };
    let fd = bpf(BPF_LINK_CREATE, &mut a)?;
    // SAFETY: BPF_LINK_CREATE returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Returns once every XDP program run that began before the call has
/// ended: XDP runs inside RCU read-side sections, and MEMBARRIER_CMD_GLOBAL
/// waits for an RCU grace period. Where it is unavailable (nohz_full), a
/// pause far longer than any program run stands in.
pub fn rcu_grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers; the command needs no registration.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if r != 0 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

//! Blocklist imports (`fail2xdp ban --file`), stored compactly: one header
//! per import (origin, reason, expiry, ports) and its networks packed in
//! sorted chunks, 5 bytes per IPv4 and 17 per IPv6 entry, so a million-line
//! list is a few megabytes and is re-applied after a reboot in one pass.
use std::{net::IpAddr, time::SystemTime};

use ipnet::IpNet;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{
    record::{unix_ns, unix_ns_opt},
    store::{StateError, Store},
};
use crate::ban::Origin;

/// import id (u64 big-endian) -> JSON [`ImportHeader`].
const IMPORTS: TableDefinition<u64, &[u8]> = TableDefinition::new("imports");
/// import id (8 bytes BE) ++ family (4|6) ++ first entry of the chunk ->
/// sorted packed entries: the chunk that may hold an entry is the last one
/// whose key is not after it.
const IMPORT_NETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("import_nets");

/// Entries per stored chunk: small enough that removing one entry rewrites
/// little, large enough that a million entries are a few dozen rows.
const CHUNK: usize = 32_768;

/// What an import bans, for all of its networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportHeader {
    pub id: u64,
    pub origin: Origin,
    /// The path as given (`-` for stdin).
    pub source: String,
    pub reason: String,
    #[serde(with = "unix_ns")]
    pub banned_at: SystemTime,
    /// None = permanent.
    #[serde(with = "unix_ns_opt")]
    pub expires_at: Option<SystemTime>,
    /// Empty = all ports.
    pub ports: Vec<u16>,
    /// Networks it still holds.
    pub count: u64,
}

impl ImportHeader {
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

fn family(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 6,
    }
}

fn entry_len(fam: u8) -> usize {
    if fam == 4 { 5 } else { 17 }
}

/// Packed entry: prefix length, then the address bytes.
fn entry(net: &IpNet) -> Vec<u8> {
    let net = crate::addr::unmap(net.trunc());
    let mut e = vec![net.prefix_len()];
    match net.addr() {
        IpAddr::V4(a) => e.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => e.extend_from_slice(&a.octets()),
    }
    e
}

fn entry_net(fam: u8, e: &[u8]) -> Option<IpNet> {
    let (&len, a) = e.split_first()?;
    let addr = match fam {
        4 => IpAddr::from(<[u8; 4]>::try_from(a).ok()?),
        _ => IpAddr::from(<[u8; 16]>::try_from(a).ok()?),
    };
    IpNet::new(addr, len).ok()
}

fn chunk_key(id: u64, fam: u8, first: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + first.len());
    k.extend_from_slice(&id.to_be_bytes());
    k.push(fam);
    k.extend_from_slice(first);
    k
}

#[expect(
    clippy::result_large_err,
    reason = "called inside a transaction closure, which speaks redb's own error type"
)]
pub(super) fn create_tables(tx: &redb::WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(IMPORTS)?;
    tx.open_table(IMPORT_NETS)?;
    Ok(())
}

fn encode_header(h: &ImportHeader) -> Vec<u8> {
    serde_json::to_vec(h).unwrap_or_default()
}

#[expect(
    clippy::result_large_err,
    reason = "transaction closures speak redb's own large error type; it is boxed once it leaves this module"
)]
impl Store {
    /// Stores an import of `nets` (deduplicated here) in one transaction;
    /// returns its header with the id given to it.
    pub fn add_import(
        &self,
        mut header: ImportHeader,
        nets: &[IpNet],
    ) -> Result<ImportHeader, StateError> {
        let mut by_fam: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        for n in nets {
            let n = crate::addr::unmap(n.trunc());
            by_fam[usize::from(family(&n) == 6)].push(entry(&n));
        }
        let mut count = 0u64;
        for v in &mut by_fam {
            v.sort_unstable();
            v.dedup();
            count += v.len() as u64;
        }
        header.count = count;
        self.write(|tx| {
            let mut imports = tx.open_table(IMPORTS)?;
            let id = imports.last()?.map_or(1, |(k, _)| k.value() + 1);
            header.id = id;
            imports.insert(id, encode_header(&header).as_slice())?;
            let mut chunks = tx.open_table(IMPORT_NETS)?;
            for (fam, entries) in [(4u8, &by_fam[0]), (6u8, &by_fam[1])] {
                for c in entries.chunks(CHUNK) {
                    let packed: Vec<u8> = c.concat();
                    chunks.insert(chunk_key(id, fam, &c[0]).as_slice(), packed.as_slice())?;
                }
            }
            Ok(header.clone())
        })
    }

    /// Every stored import's header, oldest first.
    pub fn imports(&self) -> Result<Vec<ImportHeader>, StateError> {
        self.read(|tx| {
            let t = tx.open_table(IMPORTS)?;
            let mut out = Vec::new();
            for e in t.iter()? {
                let (_, v) = e?;
                match serde_json::from_slice::<ImportHeader>(v.value()) {
                    Ok(h) => out.push(h),
                    Err(e) => log::warn!("state store: skipping an unreadable import header: {e}"),
                }
            }
            Ok(out)
        })
    }

    /// Calls `f` with every network of import `id`, in stored order.
    pub fn for_each_import_net(&self, id: u64, mut f: impl FnMut(IpNet)) -> Result<(), StateError> {
        let lo = id.to_be_bytes().to_vec();
        let hi = (id + 1).to_be_bytes().to_vec();
        self.read(|tx| {
            let t = tx.open_table(IMPORT_NETS)?;
            for e in t.range(lo.as_slice()..hi.as_slice())? {
                let (k, v) = e?;
                let fam = k.value().get(8).copied().unwrap_or(4);
                for en in v.value().chunks_exact(entry_len(fam)) {
                    if let Some(n) = entry_net(fam, en) {
                        f(n);
                    }
                }
            }
            Ok(())
        })
    }

    /// The imports that hold exactly `net`.
    pub fn imports_holding(&self, net: &IpNet) -> Result<Vec<ImportHeader>, StateError> {
        let headers = self.imports()?;
        let e = entry(net);
        let fam = family(&crate::addr::unmap(net.trunc()));
        self.read(|tx| {
            let t = tx.open_table(IMPORT_NETS)?;
            let mut out = Vec::new();
            for h in headers {
                let upto = chunk_key(h.id, fam, &e);
                let start = chunk_key(h.id, fam, &[]);
                let Some(last) = t.range(start.as_slice()..=upto.as_slice())?.next_back() else {
                    continue;
                };
                let (_, v) = last?;
                if find(v.value(), entry_len(fam), &e).is_some() {
                    out.push(h);
                }
            }
            Ok(out)
        })
    }

    /// Takes `net` out of every import holding it (an explicit unban);
    /// returns the headers of those imports. An import left empty is removed.
    pub fn remove_from_imports(&self, net: &IpNet) -> Result<Vec<ImportHeader>, StateError> {
        let holding = self.imports_holding(net)?;
        if holding.is_empty() {
            return Ok(holding);
        }
        let e = entry(net);
        let fam = family(&crate::addr::unmap(net.trunc()));
        self.write(|tx| {
            let mut chunks = tx.open_table(IMPORT_NETS)?;
            let mut imports = tx.open_table(IMPORTS)?;
            for h in &holding {
                let upto = chunk_key(h.id, fam, &e);
                let start = chunk_key(h.id, fam, &[]);
                let found = match chunks
                    .range(start.as_slice()..=upto.as_slice())?
                    .next_back()
                {
                    Some(r) => {
                        let (k, v) = r?;
                        Some((k.value().to_vec(), v.value().to_vec()))
                    }
                    None => None,
                };
                let Some((key, mut packed)) = found else {
                    continue;
                };
                let el = entry_len(fam);
                let Some(i) = find(&packed, el, &e) else {
                    continue;
                };
                packed.drain(i * el..(i + 1) * el);
                chunks.remove(key.as_slice())?;
                if !packed.is_empty() {
                    // The chunk is keyed by its first entry, which may have changed.
                    let first = packed[..el].to_vec();
                    chunks.insert(chunk_key(h.id, fam, &first).as_slice(), packed.as_slice())?;
                }
                let mut nh = h.clone();
                nh.count = nh.count.saturating_sub(1);
                if nh.count == 0 {
                    imports.remove(h.id)?;
                } else {
                    imports.insert(h.id, encode_header(&nh).as_slice())?;
                }
            }
            Ok(())
        })?;
        Ok(holding)
    }

    /// Removes imports whose ban ended at or before `now` (and their
    /// networks); returns their headers.
    pub fn purge_expired_imports(&self, now: SystemTime) -> Result<Vec<ImportHeader>, StateError> {
        self.remove_imports(|h| h.is_expired(now))
    }

    /// Removes the imports `which` picks, with their networks (`unban
    /// --all`); returns their headers.
    pub fn remove_imports(
        &self,
        which: impl Fn(&ImportHeader) -> bool,
    ) -> Result<Vec<ImportHeader>, StateError> {
        let gone: Vec<ImportHeader> = self.imports()?.into_iter().filter(|h| which(h)).collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        self.write(|tx| {
            let mut imports = tx.open_table(IMPORTS)?;
            let mut chunks = tx.open_table(IMPORT_NETS)?;
            for h in &gone {
                imports.remove(h.id)?;
                let lo = h.id.to_be_bytes().to_vec();
                let hi = (h.id + 1).to_be_bytes().to_vec();
                chunks.retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
            }
            Ok(())
        })?;
        Ok(gone)
    }
}

/// Index of `e` among the sorted packed entries of `packed`.
fn find(packed: &[u8], el: usize, e: &[u8]) -> Option<usize> {
    let n = packed.len() / el;
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match packed[mid * el..(mid + 1) * el].cmp(e) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(origin: &str) -> ImportHeader {
        ImportHeader {
            id: 0,
            origin: Origin::parse(origin).unwrap(),
            source: "x".into(),
            reason: "list".into(),
            banned_at: SystemTime::now(),
            expires_at: None,
            ports: vec![],
            count: 0,
        }
    }

    #[test]
    fn imports_hold_find_and_give_up_their_networks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut nets: Vec<IpNet> = (0..100_000u32)
            .map(|i| IpNet::from(IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000u32 + i)))) // 198.18.0.0/15
            .collect();
        nets.push("2001:db8::/64".parse().unwrap());
        nets.push("2001:db8::5/128".parse().unwrap());
        nets.push("198.18.0.7/32".parse().unwrap()); // a duplicate
        let h = store.add_import(header("file:a.txt"), &nets).unwrap();
        assert_eq!(h.count, 100_002);
        let mut seen = 0;
        store.for_each_import_net(h.id, |_| seen += 1).unwrap();
        assert_eq!(seen, 100_002);
        let probe: IpNet = "198.18.0.7/32".parse().unwrap();
        assert_eq!(store.imports_holding(&probe).unwrap().len(), 1);
        assert!(
            store
                .imports_holding(&"198.18.0.7/31".parse().unwrap())
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .imports_holding(&"2001:db8::5/128".parse().unwrap())
                .unwrap()
                .len(),
            1
        );
        // A second import of another origin holding one of the same.
        let h2 = store.add_import(header("file:b.txt"), &[probe]).unwrap();
        assert_eq!(store.imports_holding(&probe).unwrap().len(), 2);
        let gone = store.remove_from_imports(&probe).unwrap();
        assert_eq!(gone.len(), 2);
        assert!(store.imports_holding(&probe).unwrap().is_empty());
        let left = store.imports().unwrap();
        assert_eq!(left.len(), 1, "the emptied import is gone: {left:?}");
        assert_eq!(left[0].count, 100_001);
        assert!(!left.iter().any(|x| x.id == h2.id));
        // Every other network is still found, also the first of a chunk.
        for n in nets.iter().take(40_000).step_by(997) {
            if *n != probe {
                assert_eq!(store.imports_holding(n).unwrap().len(), 1, "{n}");
            }
        }
        let mut exp = header("file:c.txt");
        exp.expires_at = Some(SystemTime::now() - std::time::Duration::from_secs(1));
        store.add_import(exp, &[probe]).unwrap();
        assert_eq!(
            store
                .purge_expired_imports(SystemTime::now())
                .unwrap()
                .len(),
            1
        );
        assert!(store.imports_holding(&probe).unwrap().is_empty());
    }
}

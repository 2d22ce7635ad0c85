//! The port sets of port-scoped bans: ids into the PORTS array, so a ban
//! entry carries 16 bits for its scope instead of eight ports. Id 0 is
//! "every port and protocol" and never stored. A set is written completely
//! before any entry names its id, and an id is freed only when no entry
//! names it (see [`PortSets::collect`]).
use std::collections::{HashMap, HashSet};

use fail2xdp_common::{MAX_BAN_PORTS, PortList};

use super::{EnforcerError, maps::Mapping};
use crate::addr::PortSet;

/// The PORTS array as one operation sees it.
pub(crate) struct PortSets<'a> {
    mem: &'a Mapping,
    by_set: HashMap<Vec<u16>, u16>,
    free: Vec<u16>,
}

/// `PortList::n` sits in its third word, written last.
const N_WORD: usize = 2;

impl<'a> PortSets<'a> {
    pub fn read(mem: &'a Mapping) -> Self {
        let mut by_set = HashMap::new();
        let mut free = Vec::new();
        // Highest first, so `pop` hands out low ids first.
        for id in (1..mem.elems().min(u32::from(u16::MAX) + 1)).rev() {
            let l: PortList = mem.read(id);
            let n = (l.n as usize).min(MAX_BAN_PORTS);
            if n == 0 {
                free.push(id as u16);
            } else {
                by_set.insert(l.ports[..n].to_vec(), id as u16);
            }
        }
        PortSets { mem, by_set, free }
    }

    /// The ports of set `id`: every port for 0, none for a free id.
    pub fn ports(&self, id: u16) -> PortSet {
        if id == 0 {
            return PortSet::all();
        }
        let l: PortList = self.mem.read(u32::from(id));
        let n = (l.n as usize).min(MAX_BAN_PORTS);
        PortSet(l.ports[..n].to_vec())
    }

    /// The id of `ports`, storing the set if it is new. `None` when every
    /// id is taken (then [`collect`](Self::collect) and retry).
    pub fn id(&mut self, ports: &PortSet) -> Option<u16> {
        if ports.is_all() {
            return Some(0);
        }
        if let Some(&id) = self.by_set.get(&ports.0) {
            return Some(id);
        }
        let id = self.free.pop()?;
        let mut l = PortList::default();
        let n = ports.0.len().min(MAX_BAN_PORTS);
        l.ports[..n].copy_from_slice(&ports.0[..n]);
        l.n = n as u32;
        self.mem.write(u32::from(id), &l, N_WORD);
        self.by_set.insert(ports.0.clone(), id);
        Some(id)
    }

    /// Frees every set no entry uses (`in_use`: the ids entries name).
    pub fn collect(&mut self, in_use: &HashSet<u16>) {
        let stale: Vec<(Vec<u16>, u16)> = self
            .by_set
            .iter()
            .filter(|(_, id)| !in_use.contains(id))
            .map(|(s, &id)| (s.clone(), id))
            .collect();
        for (set, id) in stale {
            self.mem.store(u32::from(id), N_WORD, 0);
            self.by_set.remove(&set);
            self.free.push(id);
        }
    }

    pub fn full(&self) -> EnforcerError {
        EnforcerError::PortsFull(self.mem.elems().saturating_sub(1))
    }
}

/// The wider of two scopes: every port if either is, else the union, and
/// every port if the union does not fit one ban.
pub fn union(a: &PortSet, b: &PortSet) -> PortSet {
    if a.is_all() || b.is_all() {
        return PortSet::all();
    }
    let mut v: Vec<u16> = a.0.iter().chain(&b.0).copied().collect();
    v.sort_unstable();
    v.dedup();
    if v.len() > MAX_BAN_PORTS {
        PortSet::all()
    } else {
        PortSet(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_widens() {
        let p = |v: &[u16]| PortSet(v.to_vec());
        assert_eq!(union(&p(&[25]), &p(&[465, 25])), p(&[25, 465]));
        assert!(union(&p(&[25]), &PortSet::all()).is_all());
        assert!(union(&PortSet::all(), &p(&[25])).is_all());
        assert_eq!(
            union(&p(&[1, 2, 3, 4]), &p(&[5, 6, 7, 8])),
            p(&[1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert!(union(&p(&[1, 2, 3, 4, 5]), &p(&[6, 7, 8, 9])).is_all());
    }
}

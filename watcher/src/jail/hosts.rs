//! The per-jail table of hosts whose failures are being counted, bounded in
//! size: a flood of distinct addresses evicts the least recently seen host
//! instead of growing memory without limit.
use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use ipnet::IpNet;

/// What is remembered about one host (or prefix) between its failures.
#[derive(Debug, Clone)]
pub struct HostEntry {
    /// Log times (unix ns) of the failures inside the current window, oldest first.
    pub times: VecDeque<i64>,
    /// Newest matched lines, oldest first.
    pub evidence: VecDeque<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Failures since the host was first seen (not only those in the window).
    pub total: u32,
    /// Position in the recency order; the queue entry carrying this value is the live one.
    seq: u64,
}

/// Hosts keyed by the network they would be banned as.
#[derive(Debug)]
pub struct HostTable {
    /// foldhash: several times faster than SipHash on these small keys, and
    /// seeded per table, so log lines cannot aim addresses at one bucket.
    map: HashMap<IpNet, HostEntry, RandomState>,
    /// Recency order with lazy deletion: a touch appends a new (key, seq) and
    /// leaves the old pair behind, recognisable by its stale seq. Amortised O(1)
    /// per touch and eviction, compacted when stale pairs dominate.
    order: VecDeque<(IpNet, u64)>,
    next_seq: u64,
    cap: usize,
    evictions: u64,
}

impl HostTable {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::default(),
            order: VecDeque::new(),
            next_seq: 0,
            cap: cap.max(1),
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        while self.map.len() > self.cap {
            self.evict_one();
        }
    }

    pub fn get(&self, key: &IpNet) -> Option<&HostEntry> {
        self.map.get(key)
    }

    pub fn remove(&mut self, key: &IpNet) -> Option<HostEntry> {
        // The queue pair goes stale by itself: no entry carries its seq any more.
        self.map.remove(key)
    }

    /// The entry of `key`, created (evicting the least recently seen host if
    /// the table is full) when missing, and marked most recently seen.
    pub fn touch(&mut self, key: IpNet, time: i64) -> &mut HostEntry {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            while self.map.len() >= self.cap {
                self.evict_one();
            }
        }
        self.order.push_back((key, seq));
        if self.order.len() > 3 * self.map.len() + 4096 {
            self.compact();
        }
        let e = self.map.entry(key).or_insert_with(|| HostEntry {
            times: VecDeque::new(),
            evidence: VecDeque::new(),
            first_seen: time,
            last_seen: time,
            total: 0,
            seq,
        });
        e.seq = seq;
        e
    }

    fn evict_one(&mut self) {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.seq == seq) {
                self.map.remove(&key);
                self.evictions += 1;
                return;
            }
        }
    }

    fn compact(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
    }

    /// Forgets hosts whose newest failure is older than `horizon` (unix ns).
    pub fn purge_older_than(&mut self, horizon: i64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.last_seen >= horizon);
        let removed = before - self.map.len();
        if removed > 0 {
            self.compact();
        }
        removed
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpNet, &HostEntry)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test net")
    }

    #[test]
    fn evicts_least_recently_seen() {
        let mut t = HostTable::new(2);
        t.touch(net("203.0.113.1/32"), 1);
        t.touch(net("203.0.113.2/32"), 2);
        // .1 seen again: .2 is now the oldest.
        t.touch(net("203.0.113.1/32"), 3);
        t.touch(net("203.0.113.3/32"), 4);
        assert_eq!(t.len(), 2);
        assert_eq!(t.evictions(), 1);
        assert!(t.get(&net("203.0.113.1/32")).is_some());
        assert!(t.get(&net("203.0.113.2/32")).is_none());
        assert!(t.get(&net("203.0.113.3/32")).is_some());
    }

    #[test]
    fn queue_stays_bounded_under_repeated_touches() {
        let mut t = HostTable::new(10);
        for i in 0..100_000u32 {
            t.touch(net(&format!("203.0.113.{}/32", i % 5)), i64::from(i));
        }
        assert_eq!(t.len(), 5);
        assert!(t.order.len() <= 3 * 5 + 4096 + 1);
        assert_eq!(t.evictions(), 0);
    }

    #[test]
    fn flood_of_distinct_hosts_keeps_cap() {
        let mut t = HostTable::new(1000);
        for i in 0..50_000u32 {
            // 2001:db8::/32 is documentation space, large enough for a flood.
            let a = std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i));
            t.touch(IpNet::from(std::net::IpAddr::V6(a)), i64::from(i));
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.evictions(), 49_000);
    }

    #[test]
    fn purge_drops_old_hosts() {
        let mut t = HostTable::new(10);
        t.touch(net("203.0.113.1/32"), 10).last_seen = 10;
        t.touch(net("203.0.113.2/32"), 20).last_seen = 20;
        assert_eq!(t.purge_older_than(15), 1);
        assert!(t.get(&net("203.0.113.2/32")).is_some());
    }
}

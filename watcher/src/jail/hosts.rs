//! The per-jail table of hosts whose failures are being counted, bounded in
//! size: a flood of distinct addresses evicts hosts instead of growing memory
//! without limit.
//!
//! A segmented LRU, so such a flood cannot make real offenders' failures
//! vanish: a new host enters the probation segment; its second failure
//! promotes it to the protected segment (at most four fifths of the table).
//! Evictions take the least recently seen host of probation, and only touch
//! the protected segment when probation is empty; a protected segment over
//! its size demotes its least recently seen host to probation. A spray of
//! single-failure sources, however long, only ever evicts its own kind (and
//! hosts with one failure so far), never a host with two or more.
//!
//! Entries live in a slab with intrusive recency lists (O(1) touch and
//! eviction, one hash lookup per failure); a freed slot keeps the buffers of
//! its entry, so hosts coming and going do not allocate.
use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use ipnet::IpNet;

/// What is remembered about one host (or prefix) between its failures.
#[derive(Debug, Clone, Default)]
pub struct HostEntry {
    /// Log times (unix ns) of the failures inside the current window, oldest first.
    pub times: Times,
    /// Newest matched lines, oldest first.
    pub evidence: Evidence,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Failures since the host was first seen (not only those in the window).
    pub total: u32,
}

/// Failure times kept in the entry itself: counting a failure touches no
/// other memory for the usual maxretry values (a cache miss per heap buffer
/// is most of what a failure costs).
const INLINE_TIMES: usize = 8;

/// A FIFO of times: up to [`INLINE_TIMES`] inline, all of them on the heap
/// once there are more.
#[derive(Debug, Clone, Default)]
pub struct Times {
    inline: [i64; INLINE_TIMES],
    head: u8,
    len: u8,
    /// Holds every time when not empty (the inline ring is empty then).
    spill: VecDeque<i64>,
}

impl Times {
    pub fn len(&self) -> usize {
        if self.spill.is_empty() {
            usize::from(self.len)
        } else {
            self.spill.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn front(&self) -> Option<i64> {
        if !self.spill.is_empty() {
            return self.spill.front().copied();
        }
        (self.len > 0).then(|| self.inline[usize::from(self.head)])
    }

    pub fn push_back(&mut self, t: i64) {
        if !self.spill.is_empty() {
            self.spill.push_back(t);
        } else if usize::from(self.len) < INLINE_TIMES {
            self.inline[(usize::from(self.head) + usize::from(self.len)) % INLINE_TIMES] = t;
            self.len += 1;
        } else {
            self.spill.reserve(2 * INLINE_TIMES);
            for i in 0..INLINE_TIMES {
                self.spill
                    .push_back(self.inline[(usize::from(self.head) + i) % INLINE_TIMES]);
            }
            self.head = 0;
            self.len = 0;
            self.spill.push_back(t);
        }
    }

    pub fn pop_front(&mut self) -> Option<i64> {
        if !self.spill.is_empty() {
            return self.spill.pop_front();
        }
        if self.len == 0 {
            return None;
        }
        let t = self.inline[usize::from(self.head)];
        self.head = ((usize::from(self.head) + 1) % INLINE_TIMES) as u8;
        self.len -= 1;
        Some(t)
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.spill.clear();
    }
}

/// The newest matched lines of a host in one buffer, each behind its
/// length: one heap buffer per host, reused, and dropping the oldest lines
/// reads their lengths instead of scanning them. Up to twice `keep` lines
/// are held and the older half dropped at once, so a failure appends and
/// only every `keep`-th one moves memory.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// (u32 length, little-endian, then the line's bytes) per line, oldest first.
    buf: Vec<u8>,
    /// Lines in `buf`.
    count: usize,
    /// Lines shown (the newest).
    keep: usize,
    /// (line number, its offset in `buf`) of the first line a trim keeps,
    /// noted when it was added: a trim then reads none of the old lines.
    mark: Option<(usize, usize)>,
}

const LEN: usize = size_of::<u32>();

impl Evidence {
    pub fn len(&self) -> usize {
        self.count.min(self.keep)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let line = self.line_at(at)?;
            at += LEN + line.len();
            Some(line)
        })
        .skip(self.count.saturating_sub(self.keep))
    }

    fn line_at(&self, at: usize) -> Option<&str> {
        let len = u32::from_le_bytes(self.buf.get(at..at + LEN)?.try_into().ok()?) as usize;
        // Only whole lines of text are stored.
        std::str::from_utf8(self.buf.get(at + LEN..at + LEN + len)?).ok()
    }

    /// Adds `line`, keeping the newest `keep` lines.
    pub fn push(&mut self, line: &str, keep: usize) {
        self.keep = keep;
        if keep == 0 {
            self.clear();
            return;
        }
        if self.count >= 2 * keep {
            let drop = self.count - keep + 1;
            let end = match self.mark {
                _ if drop == self.count => self.buf.len(),
                Some((line, at)) if line == drop => at,
                // `keep` changed: find the end by the lengths.
                _ => {
                    let mut end = 0;
                    for _ in 0..drop {
                        let len = self
                            .buf
                            .get(end..end + LEN)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, u32::from_le_bytes);
                        end = (end + LEN + len as usize).min(self.buf.len());
                    }
                    end
                }
            };
            self.buf.drain(..end);
            self.count -= drop;
            self.mark = None;
        }
        if self.count == keep + 1 {
            self.mark = Some((self.count, self.buf.len()));
        }
        let len = u32::try_from(line.len()).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&line.as_bytes()[..len as usize]);
        self.count += 1;
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.mark = None;
    }
}

const NIL: u32 = u32::MAX;

/// Which recency list a host is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// One failure so far (or demoted): evicted first.
    Probation,
    /// Seen failing again while tracked.
    Protected,
}

#[derive(Debug)]
struct Node {
    key: IpNet,
    entry: HostEntry,
    /// Neighbours in recency order within its segment (towards newer, towards
    /// older); NIL at the ends.
    newer: u32,
    older: u32,
    seg: Segment,
}

/// Ends and length of one segment's recency list.
#[derive(Debug, Clone, Copy)]
struct List {
    newest: u32,
    oldest: u32,
    len: usize,
}

impl Default for List {
    fn default() -> Self {
        List {
            newest: NIL,
            oldest: NIL,
            len: 0,
        }
    }
}

/// Hosts keyed by the network they would be banned as.
#[derive(Debug)]
pub struct HostTable {
    /// foldhash: several times faster than SipHash on these small keys, and
    /// seeded per table, so log lines cannot aim addresses at one bucket.
    map: HashMap<IpNet, u32, RandomState>,
    nodes: Vec<Node>,
    /// Unused slots (their entries cleared, buffers kept).
    free: Vec<u32>,
    probation: List,
    protected: List,
    cap: usize,
    /// [`protected_max`] of `cap`, kept rather than divided out on every failure.
    protected_cap: usize,
    evictions: u64,
    /// Evidence buffers of removed hosts, for new ones.
    spare: Vec<Evidence>,
}

/// The protected segment's share of the table: four fifths, so probation
/// keeps at least a fifth for the hosts seen once (and a table of one host
/// has no protected segment).
fn protected_max(cap: usize) -> usize {
    cap - (cap / 5).max(1).min(cap)
}

/// Evidence buffers kept for reuse: enough for the hosts banned between two
/// new hosts, few enough not to matter in memory.
const SPARE_EVIDENCE: usize = 64;
/// A buffer grown by unusually long lines is not kept.
const SPARE_EVIDENCE_BYTES: usize = 16 * 1024;

impl HostTable {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            probation: List::default(),
            protected: List::default(),
            cap: cap.max(1),
            protected_cap: protected_max(cap.max(1)),
            evictions: 0,
            spare: Vec::new(),
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

    /// Hosts in the protected segment (seen failing more than once).
    pub fn protected(&self) -> usize {
        self.protected.len
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        self.protected_cap = protected_max(self.cap);
        while self.map.len() > self.cap {
            self.evict_one();
        }
        self.demote_excess();
    }

    pub fn get(&self, key: &IpNet) -> Option<&HostEntry> {
        self.map.get(key).map(|&i| &self.nodes[i as usize].entry)
    }

    pub fn remove(&mut self, key: &IpNet) -> Option<HostEntry> {
        let i = self.release(key)?;
        Some(std::mem::take(&mut self.nodes[i as usize].entry))
    }

    /// Keeps the buffer of `e` (emptied) for a host to come.
    pub fn recycle(&mut self, mut e: Evidence) {
        if self.spare.len() < SPARE_EVIDENCE && e.buf.capacity() <= SPARE_EVIDENCE_BYTES {
            e.clear();
            self.spare.push(e);
        }
    }

    /// Takes `key` out of the map and the recency list; its slot is free
    /// (the entry still in it, for the caller to take or keep).
    fn release(&mut self, key: &IpNet) -> Option<u32> {
        let i = self.map.remove(key)?;
        self.unlink(i);
        self.free.push(i);
        Some(i)
    }

    /// The entry of `key`, marked most recently seen: created in probation
    /// (evicting a host if the table is full) when missing, promoted to the
    /// protected segment when found in probation.
    pub fn touch(&mut self, key: IpNet, time: i64) -> &mut HostEntry {
        let i = match self.map.get(&key) {
            Some(&i) => {
                match self.nodes[i as usize].seg {
                    Segment::Protected if self.protected.newest == i => {}
                    Segment::Protected => {
                        self.unlink(i);
                        self.link_newest(i, Segment::Protected);
                    }
                    Segment::Probation if self.protected_cap > 0 => {
                        self.unlink(i);
                        self.link_newest(i, Segment::Protected);
                        self.demote_excess();
                    }
                    Segment::Probation if self.probation.newest == i => {}
                    Segment::Probation => {
                        self.unlink(i);
                        self.link_newest(i, Segment::Probation);
                    }
                }
                i
            }
            None => {
                while self.map.len() >= self.cap {
                    self.evict_one();
                }
                let i = self.alloc(key, time);
                self.map.insert(key, i);
                self.link_newest(i, Segment::Probation);
                i
            }
        };
        &mut self.nodes[i as usize].entry
    }

    /// Moves the least recently seen protected hosts to probation while the
    /// protected segment is over its size.
    fn demote_excess(&mut self) {
        while self.protected.len > self.protected_cap {
            let i = self.protected.oldest;
            self.unlink(i);
            self.link_newest(i, Segment::Probation);
        }
    }

    /// A slot for a new entry, reusing a free one and its buffers.
    fn alloc(&mut self, key: IpNet, time: i64) -> u32 {
        let spare = &mut self.spare;
        let mut fresh = |e: &mut HostEntry| {
            e.times.clear();
            e.evidence.clear();
            if e.evidence.buf.capacity() == 0
                && let Some(buf) = spare.pop()
            {
                e.evidence = buf;
            }
            e.first_seen = time;
            e.last_seen = time;
            e.total = 0;
        };
        if let Some(i) = self.free.pop() {
            let n = &mut self.nodes[i as usize];
            n.key = key;
            fresh(&mut n.entry);
            return i;
        }
        let mut entry = HostEntry::default();
        fresh(&mut entry);
        self.nodes.push(Node {
            key,
            entry,
            newer: NIL,
            older: NIL,
            seg: Segment::Probation,
        });
        (self.nodes.len() - 1) as u32
    }

    /// Takes node `i` off its segment's list.
    fn unlink(&mut self, i: u32) {
        let n = &self.nodes[i as usize];
        let (newer, older) = (n.newer, n.older);
        let l = match n.seg {
            Segment::Probation => &mut self.probation,
            Segment::Protected => &mut self.protected,
        };
        match newer {
            NIL => l.newest = older,
            j => self.nodes[j as usize].older = older,
        }
        match older {
            NIL => l.oldest = newer,
            j => self.nodes[j as usize].newer = newer,
        }
        l.len -= 1;
    }

    /// Puts node `i` (on no list) at the newest end of `seg`.
    fn link_newest(&mut self, i: u32, seg: Segment) {
        let l = match seg {
            Segment::Probation => &mut self.probation,
            Segment::Protected => &mut self.protected,
        };
        let old_newest = l.newest;
        {
            let n = &mut self.nodes[i as usize];
            n.newer = NIL;
            n.older = old_newest;
            n.seg = seg;
        }
        match old_newest {
            NIL => l.oldest = i,
            j => self.nodes[j as usize].newer = i,
        }
        l.newest = i;
        l.len += 1;
    }

    /// Evicts the least recently seen host on probation; a protected one only
    /// when probation is empty.
    fn evict_one(&mut self) {
        let i = match self.probation.oldest {
            NIL => self.protected.oldest,
            i => i,
        };
        if i == NIL {
            return;
        }
        let key = self.nodes[i as usize].key;
        self.release(&key);
        self.evictions += 1;
    }

    /// Forgets hosts whose newest failure is older than `horizon` (unix ns).
    pub fn purge_older_than(&mut self, horizon: i64) -> usize {
        let old: Vec<IpNet> = self
            .iter()
            .filter(|(_, e)| e.last_seen < horizon)
            .map(|(k, _)| *k)
            .collect();
        for k in &old {
            if let Some(i) = self.release(k) {
                // Purged hosts may be many: do not keep all their buffers.
                self.nodes[i as usize].entry = HostEntry::default();
            }
        }
        old.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpNet, &HostEntry)> {
        self.map
            .iter()
            .map(|(k, &i)| (k, &self.nodes[i as usize].entry))
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
        assert_eq!(t.nodes.len(), 5);
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
        assert_eq!(t.nodes.len(), 1000);
    }

    #[test]
    fn times_stay_in_order_inline_and_spilled() {
        let mut t = Times::default();
        let mut model = VecDeque::new();
        // Pushes and pops interleaved across the inline limit and back.
        for round in 0..5i64 {
            for i in 0..(3 + round * 4) {
                t.push_back(round * 100 + i);
                model.push_back(round * 100 + i);
            }
            for _ in 0..(2 + round * 3) {
                assert_eq!(t.pop_front(), model.pop_front());
            }
            assert_eq!((t.len(), t.front()), (model.len(), model.front().copied()));
        }
        while let Some(m) = model.pop_front() {
            assert_eq!(t.pop_front(), Some(m));
        }
        assert!(t.is_empty() && t.pop_front().is_none());
        t.push_back(7);
        assert_eq!((t.len(), t.front()), (1, Some(7)));
    }

    #[test]
    fn evidence_keeps_the_newest_lines() {
        let mut e = Evidence::default();
        for i in 0..5 {
            e.push(&format!("line {i}"), 3);
        }
        assert_eq!(e.to_vec(), ["line 2", "line 3", "line 4"]);
        for i in 5..40 {
            e.push(&format!("line {i}"), 3);
            assert_eq!(e.len(), 3);
            assert_eq!(e.iter().last(), Some(format!("line {i}").as_str()));
            assert!(e.count <= 6);
        }
        assert_eq!(e.to_vec(), ["line 37", "line 38", "line 39"]);
        // Fewer kept from now on: the newest of what is there.
        e.push("é and \\n", 2);
        assert_eq!(e.to_vec(), ["line 39", "é and \\n"]);
        e.push("", 2);
        assert_eq!(e.to_vec(), ["é and \\n", ""]);
        e.push("x", 1);
        assert_eq!((e.len(), e.to_vec()), (1, vec!["x".to_string()]));
        // No evidence kept at all.
        e.push("not kept", 0);
        assert!(e.is_empty() && e.iter().next().is_none());
    }

    /// Against a plain list of lines, with `keep` changing now and then:
    /// always the newest lines, as many as `keep` once that many came.
    #[test]
    fn evidence_matches_a_plain_list() {
        let mut e = Evidence::default();
        let mut model: Vec<String> = Vec::new();
        let mut next = crate::testrng::below(0x1234_5678_9abc_def1_u64);
        let (mut keep, mut since) = (5, 0);
        for i in 0..20_000 {
            if next(500) == 0 {
                keep = next(9) as usize;
                since = 0;
            }
            if next(2000) == 0 {
                e.clear();
                model.clear();
                since = 0;
            }
            let line = "x".repeat(next(40) as usize) + &i.to_string();
            e.push(&line, keep);
            model.push(line);
            since += 1;
            let got = e.to_vec();
            assert_eq!(
                got,
                model[model.len() - got.len()..],
                "line {i}, keep {keep}"
            );
            assert!(
                got.len() <= keep && got.len() >= keep.min(since),
                "line {i}"
            );
            assert!(e.count <= 2 * keep.max(1), "line {i}");
        }
    }

    #[test]
    fn recency_survives_removals_and_reuse() {
        let mut t = HostTable::new(3);
        let n = |i: u32| net(&format!("203.0.113.{i}/32"));
        for i in 1..=3 {
            t.touch(n(i), i64::from(i)).total = i;
        }
        // 2 leaves (banned); its slot comes back for 4, empty.
        assert_eq!(t.remove(&n(2)).map(|e| e.total), Some(2));
        assert_eq!(t.touch(n(4), 4).total, 0);
        t.touch(n(1), 5).last_seen = 5;
        // Full again: 3 is the least recently seen now.
        t.touch(n(5), 6);
        assert!(t.get(&n(3)).is_none());
        for i in [1, 4, 5] {
            assert!(t.get(&n(i)).is_some(), "{i}");
        }
        assert_eq!(t.evictions(), 1);
        assert_eq!(t.purge_older_than(5), 1);
        assert!(t.get(&n(4)).is_none());
        t.touch(n(6), 7);
        t.touch(n(7), 8);
        assert_eq!(t.len(), 3);
        // 1 failed twice (protected): the hosts seen once go first, oldest first.
        assert!(t.get(&n(5)).is_none());
        assert!(t.get(&n(1)).is_some());
    }

    fn v6(i: u64) -> IpNet {
        // 2001:db8::/32 is documentation space, large enough for a flood of /64s.
        let a = std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i) << 64);
        IpNet::new(std::net::IpAddr::V6(a), 64).expect("prefix")
    }

    #[test]
    fn hosts_seen_twice_outlive_any_spray_of_hosts_seen_once() {
        let mut t = HostTable::new(100);
        let n = |i: u32| net(&format!("203.0.113.{i}/32"));
        for i in 1..=3 {
            t.touch(n(i), 0);
            t.touch(n(i), 1);
        }
        // One failure so far: this one can still be pushed out.
        t.touch(n(4), 1);
        for i in 0..100_000 {
            t.touch(v6(i), 2);
        }
        assert_eq!((t.len(), t.protected()), (100, 3));
        for i in 1..=3 {
            assert!(t.get(&n(i)).is_some(), "{i} was evicted");
        }
        assert!(t.get(&n(4)).is_none());
        assert_eq!(t.evictions(), 100_000 + 4 - 100);
        assert_eq!(t.nodes.len(), 100);
    }

    #[test]
    fn the_protected_segment_is_bounded_and_demotes_its_oldest() {
        let mut t = HostTable::new(10);
        // Eleven hosts seen twice: only eight fit in protected, the oldest go back to
        // probation (and the table still holds ten).
        for i in 0..11 {
            t.touch(v6(i), 0);
            t.touch(v6(i), 1);
        }
        assert_eq!((t.len(), t.protected()), (10, 8));
        assert!(t.get(&v6(0)).is_none());
        // Demoted hosts are the ones a spray evicts next; the protected ones stay.
        for i in 100..200 {
            t.touch(v6(i), 2);
        }
        for i in 1..3 {
            assert!(t.get(&v6(i)).is_none(), "{i}");
        }
        for i in 3..11 {
            assert!(t.get(&v6(i)).is_some(), "{i}");
        }
        // A demoted host seen again is promoted again.
        t.touch(v6(200), 3);
        t.touch(v6(200), 4);
        assert!(t.get(&v6(3)).is_some() && t.protected() == 8);
        // Shrinking keeps the proportions.
        t.set_cap(5);
        assert_eq!((t.len(), t.protected()), (5, 4));
        // A table of one host has no protected segment, and still works.
        let mut one = HostTable::new(1);
        one.touch(v6(1), 0);
        one.touch(v6(1), 1);
        one.touch(v6(2), 2);
        assert_eq!((one.len(), one.protected()), (1, 0));
        assert!(one.get(&v6(2)).is_some());
    }

    /// The case, at scale: offenders on their way to maxretry, then
    /// 10,000,000 single-failure sources in between their failures (far more
    /// than the table holds): every offender that reaches maxretry within
    /// findtime is banned, and the spray's evictions are counted.
    #[test]
    fn ten_million_single_failures_do_not_save_an_offender() {
        use crate::jail::{Failure, Jail, Rules};
        const S: i64 = 1_000_000_000;
        const SPRAY: u64 = 10_000_000;
        const OFFENDERS: u32 = 200;
        let mut jail = Jail::new(
            "t",
            Rules {
                maxretry: 4,
                findtime: std::time::Duration::from_secs(600),
                bantime: Some(std::time::Duration::from_secs(3600)),
                increment: None,
                ipv4_prefix: 32,
                ipv6_prefix: 64,
                max_hosts: 5_000,
                evidence_lines: 0,
            },
        );
        let offender = |i: u32| std::net::IpAddr::from([203, 0, 113, i as u8]);
        let sprayed = |i: u64| {
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | u128::from(i) << 64 | 1,
            ))
        };
        let fail = |host, time| Failure {
            host,
            time,
            line: "x",
            filter: 0,
            regex: 0,
        };
        // All within ten minutes on the log's clock.
        let time = |k: u64| k as i64 * (500 * S / SPRAY as i64);
        for i in 0..OFFENDERS {
            for _ in 0..2 {
                assert!(jail.failure(&fail(offender(i), 0), 0).is_none());
            }
        }
        let mut banned = std::collections::HashSet::new();
        // The offenders' third and fourth failures fall at spread-out points of the spray.
        let next_offense = |k: u64| -> Option<u32> {
            let step = SPRAY / (2 * u64::from(OFFENDERS) + 1);
            (k.is_multiple_of(step) && k > 0 && k / step <= 2 * u64::from(OFFENDERS))
                .then(|| ((k / step - 1) % u64::from(OFFENDERS)) as u32)
        };
        for k in 0..SPRAY {
            assert!(jail.failure(&fail(sprayed(k), time(k)), 0).is_none());
            if let Some(i) = next_offense(k)
                && let Some(o) = jail.failure(&fail(offender(i), time(k)), 0)
            {
                assert_eq!(o.failures, 4);
                assert!(banned.insert(o.net), "{} twice", o.net);
            }
        }
        assert_eq!(banned.len(), OFFENDERS as usize);
        assert!(jail.evictions() >= SPRAY - 5_000, "{}", jail.evictions());
        assert!(jail.tracked_hosts() <= 5_000);
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

//! The prefix-length slot tables in Config. The XDP program probes slots
//! 0..n with no lock, so every change is planned as a sequence of steps that
//! each rewrite one slot or `n`, such that a length still in use is present
//! in some slot other than the one being rewritten at every moment (a torn
//! read of the slot in flight can then only cost a duplicate probe, never a
//! missed ban). Longer prefixes go to lower slots so the most specific ban
//! is found first. Pure functions here; bans.rs writes the steps to the map.
use std::collections::BTreeSet;

use fail2xdp_common::{Config, LEN_UNUSED, LenSlotV4, LenSlotV6, mark_v4, mask_v4, mask_v6};

/// One slot table as plain lengths; `LEN_UNUSED` marks a free slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub lens: Vec<u32>,
    pub n: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Slot(usize, u32),
    N(u32),
}

impl Table {
    fn probed(&self) -> &[u32] {
        &self.lens[..(self.n as usize).min(self.lens.len())]
    }

    pub fn in_use(&self) -> BTreeSet<u32> {
        self.probed()
            .iter()
            .copied()
            .filter(|&l| l != LEN_UNUSED)
            .collect()
    }

    pub fn contains(&self, len: u32) -> bool {
        self.probed().contains(&len)
    }

    pub fn apply(&mut self, step: Step) {
        match step {
            Step::Slot(i, l) => self.lens[i] = l,
            Step::N(n) => self.n = n,
        }
    }

    /// Steps that make `len` probed. `None` if the table has no room, which
    /// only a corrupt table (duplicates, junk) can cause: rebuild it then.
    pub fn plan_add(&self, len: u32) -> Option<Vec<Step>> {
        if self.contains(len) {
            return Some(Vec::new());
        }
        let n = self.probed().len();
        let cap = self.lens.len();
        let lens = self.probed();
        // First slot holding a shorter prefix: `len` belongs just before it.
        let p = lens
            .iter()
            .position(|&l| l != LEN_UNUSED && l < len)
            .unwrap_or(n);
        if p > 0 && lens[p - 1] == LEN_UNUSED {
            return Some(vec![Step::Slot(p - 1, len)]);
        }
        if p == n {
            return (n < cap).then(|| vec![Step::Slot(n, len), Step::N(n as u32 + 1)]);
        }
        // Shift p.. one slot up into the first hole (or a new slot at n),
        // copying from the top so each length always has an untouched copy.
        let mut steps = Vec::new();
        let h = match lens[p..].iter().position(|&l| l == LEN_UNUSED) {
            Some(off) => p + off,
            None if n < cap => {
                steps.push(Step::Slot(n, lens[n - 1]));
                steps.push(Step::N(n as u32 + 1));
                n - 1
            }
            None => return None,
        };
        for k in (p + 1..=h).rev() {
            steps.push(Step::Slot(k, lens[k - 1]));
        }
        steps.push(Step::Slot(p, len));
        Some(steps)
    }

    /// Steps that stop probing `len`, then drop trailing free slots from `n`.
    pub fn plan_remove(&self, len: u32) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut after = self.clone();
        for (i, &l) in self.probed().iter().enumerate() {
            if l == len {
                steps.push(Step::Slot(i, LEN_UNUSED));
                after.lens[i] = LEN_UNUSED;
            }
        }
        let new_n = after
            .probed()
            .iter()
            .rposition(|&l| l != LEN_UNUSED)
            .map_or(0, |i| i + 1);
        if new_n < self.probed().len() {
            steps.push(Step::N(new_n as u32));
        }
        steps
    }

    /// Steps that make the probed lengths exactly `want`: additions first,
    /// so a ban is never unprobed while its length is in use.
    pub fn plan_sync(&self, want: &BTreeSet<u32>) -> Option<Vec<Step>> {
        let mut t = self.clone();
        let mut steps = Vec::new();
        for &l in want.iter().rev() {
            for s in t.plan_add(l)? {
                t.apply(s);
                steps.push(s);
            }
        }
        for l in t.in_use().difference(want).copied().collect::<Vec<_>>() {
            for s in t.plan_remove(l) {
                t.apply(s);
                steps.push(s);
            }
        }
        // Junk beyond n (e.g. a crash between writing a slot and raising n) is
        // harmless, but clear it so a later raise of n cannot expose it.
        for i in t.n as usize..t.lens.len() {
            if t.lens[i] != LEN_UNUSED {
                t.lens[i] = LEN_UNUSED;
                steps.push(Step::Slot(i, LEN_UNUSED));
            }
        }
        Some(steps)
    }
}

/// The four tables in Config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    AllowV4,
    AllowV6,
    PfxV4,
    PfxV6,
}

pub fn table(cfg: &Config, w: Which) -> Table {
    let (lens, n): (Vec<u32>, u32) = match w {
        Which::AllowV4 => (cfg.allow_v4.iter().map(|s| s.len).collect(), cfg.allow_v4_n),
        Which::PfxV4 => (cfg.pfx_v4.iter().map(|s| s.len).collect(), cfg.pfx_v4_n),
        Which::AllowV6 => (cfg.allow_v6.iter().map(|s| s.len).collect(), cfg.allow_v6_n),
        Which::PfxV6 => (cfg.pfx_v6.iter().map(|s| s.len).collect(), cfg.pfx_v6_n),
    };
    Table { lens, n }
}

pub fn apply(cfg: &mut Config, w: Which, step: Step) {
    let v4 = |l: u32| LenSlotV4 {
        len: l,
        mask: if l == LEN_UNUSED { [0; 4] } else { mask_v4(l) },
        mark: if l == LEN_UNUSED { [0; 4] } else { mark_v4(l) },
    };
    let v6 = |l: u32| LenSlotV6 {
        len: l,
        _pad: 0,
        mask: if l == LEN_UNUSED { [0; 2] } else { mask_v6(l) },
    };
    match (w, step) {
        (Which::AllowV4, Step::Slot(i, l)) => cfg.allow_v4[i] = v4(l),
        (Which::PfxV4, Step::Slot(i, l)) => cfg.pfx_v4[i] = v4(l),
        (Which::AllowV6, Step::Slot(i, l)) => cfg.allow_v6[i] = v6(l),
        (Which::PfxV6, Step::Slot(i, l)) => cfg.pfx_v6[i] = v6(l),
        (Which::AllowV4, Step::N(n)) => cfg.allow_v4_n = n,
        (Which::PfxV4, Step::N(n)) => cfg.pfx_v4_n = n,
        (Which::AllowV6, Step::N(n)) => cfg.allow_v6_n = n,
        (Which::PfxV6, Step::N(n)) => cfg.pfx_v6_n = n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fail2xdp_common::{LEN_SLOTS_V4, LEN_SLOTS_V6};

    fn empty(cap: usize) -> Table {
        Table {
            lens: vec![LEN_UNUSED; cap],
            n: 0,
        }
    }

    /// Applies `steps`, checking before each one that every length in use
    /// both before and after the whole plan is probed outside the slot being
    /// written, and that a slot is filled before `n` covers it.
    fn run(t: &Table, steps: &[Step], keep: &BTreeSet<u32>) -> Table {
        let mut cur = t.clone();
        for &s in steps {
            for &l in keep {
                let present = cur
                    .probed()
                    .iter()
                    .enumerate()
                    .any(|(i, &x)| x == l && !matches!(s, Step::Slot(j, _) if j == i));
                assert!(present, "{l} not probed during {s:?} in {cur:?}");
            }
            if let Step::N(n) = s {
                for i in cur.n as usize..n as usize {
                    assert_ne!(cur.lens[i], LEN_UNUSED, "n raised over a free slot");
                }
            }
            cur.apply(s);
        }
        cur
    }

    fn sorted_desc(t: &Table) -> bool {
        let used: Vec<u32> = t
            .probed()
            .iter()
            .copied()
            .filter(|&l| l != LEN_UNUSED)
            .collect();
        used.windows(2).all(|w| w[0] > w[1])
    }

    #[test]
    fn adds_keep_longest_first_and_never_unprobe() {
        for order in [
            vec![24, 16, 20, 28, 8],
            vec![8, 16, 24, 32, 12, 30],
            vec![17, 18, 19, 20, 16, 21],
        ] {
            let mut t = empty(LEN_SLOTS_V4);
            for &l in &order {
                let keep = t.in_use();
                let steps = t.plan_add(l).unwrap();
                t = run(&t, &steps, &keep);
                assert!(t.contains(l));
                assert!(sorted_desc(&t), "{t:?}");
                assert_eq!(t.n as usize, t.in_use().len());
            }
        }
    }

    #[test]
    fn add_existing_is_noop_and_full_table() {
        let mut t = empty(LEN_SLOTS_V4);
        for l in 0..=32 {
            for s in t.plan_add(l).unwrap() {
                t.apply(s);
            }
        }
        assert_eq!(t.n, 33);
        assert!(sorted_desc(&t));
        assert_eq!(t.plan_add(7), Some(vec![]));
        let junk = Table {
            lens: vec![5; 3],
            n: 3,
        };
        assert_eq!(junk.plan_add(9), None);
    }

    #[test]
    fn remove_frees_then_shrinks_and_holes_are_reused() {
        let mut t = empty(LEN_SLOTS_V6);
        for l in [64, 48, 56] {
            for s in t.plan_add(l).unwrap() {
                t.apply(s);
            }
        }
        assert_eq!(&t.lens[..3], &[64, 56, 48]);
        let steps = t.plan_remove(56);
        assert_eq!(steps, vec![Step::Slot(1, LEN_UNUSED)]);
        t = run(&t, &steps, &[64, 48].into());
        // The hole is reused by a length that sorts there.
        assert_eq!(t.plan_add(60).unwrap(), vec![Step::Slot(1, 60)]);
        let steps = t.plan_remove(48);
        assert_eq!(steps, vec![Step::Slot(2, LEN_UNUSED), Step::N(1)]);
        t = run(&t, &steps, &[64].into());
        assert_eq!(t.n, 1);
        t = run(&t, &t.plan_remove(64), &BTreeSet::new());
        assert_eq!(t.n, 0);
    }

    #[test]
    fn sync_repairs_and_clears_junk() {
        let t = Table {
            lens: vec![16, LEN_UNUSED, 24, 9, LEN_UNUSED, 30],
            n: 3,
        };
        let want: BTreeSet<u32> = [24, 20, 8].into();
        let steps = t.plan_sync(&want).unwrap();
        let keep: BTreeSet<u32> = [24].into();
        let after = run(&t, &steps, &keep);
        assert_eq!(after.in_use(), want);
        assert!(
            after.lens[after.n as usize..]
                .iter()
                .all(|&l| l == LEN_UNUSED)
        );
    }

    #[test]
    fn masks_follow_slots() {
        let mut cfg = Config::EMPTY;
        apply(&mut cfg, Which::PfxV4, Step::Slot(0, 24));
        apply(&mut cfg, Which::PfxV4, Step::N(1));
        assert_eq!(cfg.pfx_v4[0].mask, [255, 255, 255, 0]);
        assert_eq!(cfg.pfx_v4[0].mark, [0, 0, 0, 128]);
        apply(&mut cfg, Which::AllowV6, Step::Slot(2, 64));
        assert_eq!(cfg.allow_v6[2].mask, mask_v6(64));
        assert_eq!(table(&cfg, Which::PfxV4).in_use(), [24].into());
        apply(&mut cfg, Which::PfxV4, Step::Slot(0, LEN_UNUSED));
        assert_eq!(cfg.pfx_v4[0].mask, [0; 4]);
    }
}

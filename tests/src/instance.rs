//! A private fail2xdp data plane for frame-by-frame tests and benchmarks:
//! the real enforcer creates and fills the maps in a pin dir of its own,
//! and the embedded object's programs are loaded again over those pins, so
//! frames run through BPF_PROG_TEST_RUN meet exactly what the enforcer
//! wrote. Unpinned on Drop; uniquely named, so instances run in parallel.

use std::{
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData},
    programs::Xdp,
};
use fail2xdp::enforcer::{Capacities, Enforcer};
use fail2xdp_common::{Config, PROG_NAME, map};

use crate::{bpf, netns::unique_name};

pub struct Instance {
    pub enforcer: Enforcer,
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

/// Capacities small enough for many parallel tests (the arrays are
/// preallocated), unless a test asks for more.
pub fn small_capacities(n: u32) -> Capacities {
    Capacities::small(n)
}

impl Instance {
    /// A fresh instance with `caps`; both programs of the object (`fail2xdp`
    /// and the trivial `xdp_pass`) loaded, neither attached anywhere.
    pub fn new(caps: &Capacities) -> Result<Self> {
        crate::require_privileges();
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique_name("f2x-test"));
        let enforcer = Enforcer::load(&pin_dir, caps)
            .with_context(|| format!("creating an instance under {}", pin_dir.display()))?;
        let mut loader = EbpfLoader::new();
        for name in map::ALL {
            loader.map_pin_path(name, pin_dir.join(name));
        }
        let mut ebpf = loader
            .load(fail2xdp::EBPF_OBJECT)
            .context("loading the embedded XDP object over the instance's pins")?;
        for name in [PROG_NAME, "xdp_pass"] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the object"))?
                .try_into()
                .with_context(|| format!("program {name} is not XDP"))?;
            prog.load()
                .with_context(|| format!("the kernel refused program {name}"))?;
        }
        Ok(Instance {
            enforcer,
            ebpf,
            pin_dir,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The names of the object's programs.
    pub fn programs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.ebpf.programs().map(|(n, _)| n.to_owned()).collect();
        v.sort();
        v
    }

    pub fn has_map(&self, name: &str) -> bool {
        self.ebpf.map(name).is_some()
    }

    pub fn prog(&self, name: &str) -> Result<BorrowedFd<'_>> {
        let p: &Xdp = self
            .ebpf
            .program(name)
            .with_context(|| format!("program {name}"))?
            .try_into()?;
        Ok(p.fd()?.as_fd())
    }

    /// `fail2xdp` on `frame` once: its verdict.
    pub fn run(&self, frame: &[u8]) -> Result<u32> {
        Ok(bpf::test_run(self.prog(PROG_NAME)?, frame, 1)?.0)
    }

    /// Program `name` `repeat` times on `frame`: (verdict, ns per run).
    pub fn run_n(&self, name: &str, frame: &[u8], repeat: u32) -> Result<(u32, u32)> {
        bpf::test_run(self.prog(name)?, frame, repeat)
    }

    fn config_map(&self) -> Result<Array<MapData, Config>> {
        let md = MapData::from_pin(self.pin_dir.join(map::CONFIG))?;
        Ok(Array::try_from(Map::Array(md))?)
    }

    pub fn config(&self) -> Result<Config> {
        Ok(self.config_map()?.get(&0, 0)?)
    }

    /// Writes CONFIG behind the enforcer's back (tests of what the XDP
    /// program does with states the enforcer passes through).
    pub fn set_config(&self, c: Config) -> Result<()> {
        let mut m = self.config_map()?;
        m.set(0, c, 0)?;
        if self.config()? != c {
            bail!("CONFIG did not take the write");
        }
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Err(e) = fail2xdp::enforcer::detach(&self.pin_dir, &[]) {
            eprintln!("warning: removing {}: {e:#}", self.pin_dir.display());
        }
    }
}

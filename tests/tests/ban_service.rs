//! The ban service against real pinned maps and a real state store. Run as
//! root: `cargo test -p fail2xdp-tests --test ban_service`.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp::{
    ban::{BanService, Order, Origin, Persist, Policy},
    enforcer::{Enforcer, IpNet, PortSet},
    state::Store,
};
use fail2xdp_tests::{Instance, small_capacities};

/// A flush (what `explain` does before reading the store) while a batch of
/// bans is being written waits for that batch's records: it used to return
/// between the batch's map writes and its records, and `explain` showed a
/// ban in the maps as "no record in the state store" (seen with a CrowdSec
/// decision on a loaded machine).
#[test]
fn a_flush_during_a_ban_finds_its_records() -> Result<()> {
    const N: u32 = 20_000;
    let inst = Instance::new(&small_capacities(2 * N))?;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(dir.path())?);
    let svc = Arc::new(BanService::new(
        Some(Enforcer::open(inst.pin_dir())?),
        Some(store.clone()),
        Persist::Background,
        Policy::default(),
        Vec::new(),
    ));
    let net = |i: u32| {
        let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i);
        IpNet::new(IpAddr::V4(a), 32).expect("a /32")
    };
    let orders: Vec<Order> = (0..N)
        .map(|i| {
            Order::now(
                net(i),
                Origin::Manual,
                Some(Duration::from_secs(3600)),
                PortSet::default(),
                "a flush test".into(),
            )
        })
        .collect();
    let last = net(N - 1);
    let banning = {
        let svc = svc.clone();
        std::thread::spawn(move || svc.ban(orders))
    };
    // The batch's last ban in the maps: its records are about to be sent.
    let maps = Enforcer::open(inst.pin_dir())?;
    let t0 = Instant::now();
    while maps.get(&last)?.is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("{last} never reached the maps");
        }
        std::thread::yield_now();
    }
    svc.flush();
    let claims = store.claims(&last)?;
    let outcomes = banning.join().ok().context("the banning thread panicked")?;
    assert_eq!(outcomes.len(), N as usize);
    assert!(
        !claims.is_empty(),
        "{last} was in the maps, and after a flush still had no record"
    );
    svc.shutdown();
    Ok(())
}

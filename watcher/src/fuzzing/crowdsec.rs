//! CrowdSec Local API answers: `GET /v1/decisions/stream` bodies read as
//! the client reads them, then applied by the bouncer through a dry-run ban
//! service, one answer after another (a full listing or a delta, as the
//! input says), the way a hostile or broken LAPI could send them.
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use ipnet::IpNet;

use crate::{
    addr,
    ban::{BanEvent, BanService, Persist, Policy, PrefixLimits, Subscriber},
    crowdsec::{api::DecisionStream, bouncer::Bouncer},
};

/// The networks the service banned (in a dry run: would have banned).
#[derive(Default)]
struct Written(Mutex<Vec<IpNet>>);

impl Subscriber for Written {
    fn event(&self, e: &BanEvent) {
        if let BanEvent::Banned(b) = e {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(b.net);
        }
    }
}

/// The configuration's allowlist here: a decision may name it, and must
/// then be refused.
const ALLOWED: &str = "192.0.2.0/24";

/// Input: one byte whose bit `i` makes answer `i` a full listing (else a
/// delta), then the answers, separated by NUL bytes (which JSON text never
/// holds raw).
pub fn crowdsec_stream(data: &[u8]) {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let banned = Arc::new(Written::default());
    let svc = BanService::new(
        None,
        None,
        Persist::Sync,
        Policy {
            limits: PrefixLimits::default(),
            allowlist: vec![ALLOWED.parse().expect("a network")],
            jail_allow: Default::default(),
        },
        vec![Arc::clone(&banned) as Arc<dyn Subscriber>],
    );
    let guard = svc.guard();
    let mut bouncer = Bouncer::default();
    let mut seen_ids = HashSet::new();
    // Every network a decision so far named: a delta that deletes a claim's
    // longest decision re-writes the claim with one an earlier answer sent.
    let mut named: HashSet<IpNet> = HashSet::new();
    for (i, body) in rest.split(|&b| b == 0).take(16).enumerate() {
        // What the client does with a 200 answer's body.
        let Ok(stream) = serde_json::from_slice::<DecisionStream>(body) else {
            continue;
        };
        let full = knobs & (1 << (i % 8)) != 0;
        named.extend(
            stream
                .new
                .iter()
                .filter_map(|d| addr::parse_net(&d.value).ok())
                .map(|n| addr::unmap(n).trunc()),
        );
        seen_ids.extend(stream.new.iter().map(|d| d.id));
        banned.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let sync = if full {
            bouncer.full(&stream, &svc)
        } else {
            bouncer.delta(&stream, &svc)
        };
        let listed = stream.new.len() + if full { 0 } else { stream.deleted.len() };
        assert_eq!(sync.decisions, listed, "decisions counted");
        assert!(
            sync.ignored + sync.invalid <= stream.new.len(),
            "{sync:?} for {} new decisions",
            stream.new.len()
        );
        assert!(bouncer.active() <= seen_ids.len(), "more active than seen");
        for net in banned.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // Only what a decision so far named, never a protected
            // or too broad network, whatever the answer holds.
            assert!(
                named.contains(net),
                "{net} banned but named by no decision so far"
            );
            assert!(
                guard.check(net, false, &[]).is_ok(),
                "{net} banned though the guard refuses it"
            );
        }
        for (net, _) in bouncer.claims() {
            assert_eq!(*net, addr::unmap(*net).trunc(), "a claim of a raw network");
        }
    }
}

//! A [`Sample`] as metric families (prometheus-client's text encoder adds
//! `_total` to counters and the unit to names: `fail2xdp_dropped_packets`
//! is scraped as `fail2xdp_dropped_packets_total`).
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::Sample;
use crate::status::ProtectionState;

type Labels = Vec<(&'static str, String)>;

pub fn render(latency: &Histogram, sample: Sample) -> String {
    let mut reg = Registry::default();
    reg.register_with_unit(
        "fail2xdp_ban_latency",
        "From a log line's arrival at the match stage to its ban's map write",
        Unit::Seconds,
        latency.clone(),
    );
    reg.register_collector(Box::new(Snapshot(sample)));
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        out.clear();
        out.push_str("# encoding the metrics failed\n# EOF\n");
    }
    out
}

#[derive(Debug)]
struct Snapshot(Sample);

/// One family: every row is one label set and its value.
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    rows: Vec<(Labels, u64)>,
}

impl Family {
    fn counter(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            counter: true,
            rows: Vec::new(),
        }
    }

    fn gauge(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            counter: false,
            rows: Vec::new(),
        }
    }

    fn row(mut self, labels: Labels, v: u64) -> Self {
        self.rows.push((labels, v));
        self
    }

    fn rows(mut self, rows: impl IntoIterator<Item = (Labels, u64)>) -> Self {
        self.rows.extend(rows);
        self
    }

    fn encode(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ty = if self.counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        let mut m = enc.encode_descriptor(self.name, self.help, None, ty)?;
        for (labels, v) in &self.rows {
            let f = m.encode_family(labels)?;
            if self.counter {
                ConstCounter::new(*v).encode(f)?;
            } else {
                ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(f)?;
            }
        }
        Ok(())
    }
}

fn l1(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in families(&self.0) {
            f.encode(&mut enc)?;
        }
        Ok(())
    }
}

fn families(s: &Sample) -> Vec<Family> {
    let st = &s.status;
    let dp = &st.data_plane;
    let c = dp.counters.unwrap_or_default();
    let mut out = vec![
        Family::gauge("fail2xdp_build_info", "The agent's version").row(
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("instance_name", st.instance.name.clone()),
            ],
            1,
        ),
        Family::gauge(
            "fail2xdp_protection",
            "1 for the protection state the instance is in (enforcing, degraded, off); never fail open silently",
        )
        .rows(
            [
                ProtectionState::Enforcing,
                ProtectionState::Degraded,
                ProtectionState::Off,
            ]
            .into_iter()
            .map(|p| {
                (
                    l1("state", p.to_string().to_lowercase()),
                    u64::from(st.protection.state == p),
                )
            }),
        ),
        Family::gauge(
            "fail2xdp_protection_problems",
            "Problems status lists (why protection is degraded or off)",
        )
        .row(Vec::new(), st.protection.problems.len() as u64),
        Family::counter(
            "fail2xdp_dropped_packets",
            "Packets the XDP program dropped, by the origin of the ban (a jail's name, manual, file:NAME, crowdsec:...) and address family",
        )
        .rows(s.groups.iter().map(|((origin, fam), g)| {
            (
                vec![("origin", origin.clone()), ("family", fam.as_str().into())],
                g.dropped,
            )
        })),
        Family::counter(
            "fail2xdp_dropped_bytes",
            "Bytes of the packets the XDP program dropped",
        )
        .row(Vec::new(), c.drop_bytes),
        Family::counter(
            "fail2xdp_xdp_packets",
            "Packets the XDP program saw, by verdict",
        )
        .row(l1("verdict", "pass"), c.pass_pkts)
        .row(l1("verdict", "drop"), c.drop_pkts),
        Family::counter("fail2xdp_xdp_bytes", "Bytes the XDP program saw, by verdict")
            .row(l1("verdict", "pass"), c.pass_bytes)
            .row(l1("verdict", "drop"), c.drop_bytes),
        Family::counter(
            "fail2xdp_xdp_passes",
            "Packets passed for a reason worth telling apart",
        )
        .row(l1("reason", "allowlisted"), c.pass_allowlisted)
        .row(l1("reason", "unparsed"), c.pass_unparsed)
        .row(l1("reason", "expired"), c.pass_expired)
        .row(l1("reason", "other_port"), c.pass_other_port),
        Family::gauge(
            "fail2xdp_active_bans",
            "Bans in force in the maps, by origin and address family",
        )
        .rows(s.groups.iter().map(|((origin, fam), g)| {
            (
                vec![("origin", origin.clone()), ("family", fam.as_str().into())],
                g.active,
            )
        })),
        Family::gauge(
            "fail2xdp_map_entries",
            "Entries in each pinned map",
        )
        .rows(dp.maps.iter().map(|m| (l1("map", m.map.to_string()), m.entries as u64))),
        Family::gauge(
            "fail2xdp_map_capacity",
            "Capacity of each pinned map",
        )
        .rows(dp.maps.iter().map(|m| (l1("map", m.map.to_string()), u64::from(m.capacity)))),
        Family::gauge(
            "fail2xdp_attached_interfaces",
            "Interfaces carrying the XDP program",
        )
        .row(
            Vec::new(),
            dp.interfaces
                .iter()
                .filter(|l| l.ifindex != 0 && l.mode != crate::enforcer::AttachedMode::None)
                .count() as u64,
        ),
    ];
    if let Some(a) = &st.agent {
        out.push(
            Family::counter(
                "fail2xdp_bans",
                "Bans made since the agent started, by origin (a jail's name, manual, file:NAME, crowdsec:...)",
            )
            .rows(
                a.bans
                    .by_origin
                    .iter()
                    .map(|(o, &n)| (l1("origin", o.clone()), n)),
            ),
        );
        out.push(
            Family::counter(
                "fail2xdp_refused_bans",
                "Bans the guard refused, by why (loopback, allowlisted, own_address, too_broad, ...)",
            )
            .rows(
                a.bans
                    .refused
                    .iter()
                    .map(|(k, &n)| (l1("kind", k.clone()), n)),
            ),
        );
        out.push(
            Family::counter("fail2xdp_unbans", "Unbans since the agent started")
                .row(Vec::new(), a.bans.unbanned),
        );
        out.push(
            Family::counter(
                "fail2xdp_failures",
                "Failures the jails' filters found, by jail",
            )
            .rows(
                a.jails
                    .iter()
                    .map(|j| (l1("jail", j.name.clone()), j.failures)),
            ),
        );
        out.push(
            Family::gauge(
                "fail2xdp_tracked_hosts",
                "Hosts each jail is counting failures of",
            )
            .rows(
                a.jails
                    .iter()
                    .map(|j| (l1("jail", j.name.clone()), j.tracked_hosts as u64)),
            ),
        );
        out.push(
            Family::counter(
                "fail2xdp_log_lines",
                "Log lines read, by source and result (matched: a filter recognised it; missed: none did; skipped: unreadable or too long)",
            )
            .rows(a.sources.iter().flat_map(|s| {
                let lab = |r: &str| vec![("source", s.source.clone()), ("result", r.to_string())];
                [
                    (lab("matched"), s.matched),
                    (lab("missed"), s.counted.saturating_sub(s.matched)),
                    (lab("skipped"), s.skipped_too_long + s.skipped_unreadable),
                ]
            })),
        );
        out.push(
            Family::counter(
                "fail2xdp_store_failed_writes",
                "State store writes that failed (bans enforced but not durable)",
            )
            .row(Vec::new(), a.store.failed_writes),
        );
        if let Some(c) = &a.connections {
            out.push(
                Family::counter(
                    "fail2xdp_connections_closed",
                    "Open TCP connections of banned sources closed at their ban (close_connections)",
                )
                .row(Vec::new(), c.closed),
            );
            out.push(
                Family::gauge(
                    "fail2xdp_connections_closing_failed",
                    "1 while banned sources' open connections cannot be closed (status says why)",
                )
                .row(Vec::new(), u64::from(c.problem.is_some())),
            );
        }
        out.push(
            Family::gauge("fail2xdp_uptime_seconds", "Seconds since the agent started")
                .row(Vec::new(), a.uptime_secs),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use crate::{
        ban::{BanEvent, Subscriber},
        census::{Family as Fam, Group},
        instance::Instance,
        metrics::Metrics,
        status::Status,
    };

    #[test]
    fn a_sample_renders_as_openmetrics() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::named("t")
            .unwrap()
            .with(Some(dir.path().join("pins")), None, None);
        let m = Metrics::default();
        let mut b = crate::ban::Banned {
            net: "203.0.113.9/32".parse().unwrap(),
            origin: crate::ban::Origin::Manual,
            reason: String::new(),
            length: None,
            expires_at: None,
            ports: crate::addr::PortSet::all(),
            failures: 0,
            times_banned: 1,
            narrowed_from: None,
            kept_longer: false,
            dry_run: false,
            evidence: std::sync::Arc::from(Vec::new()),
            first_seen: std::time::SystemTime::now(),
            last_seen: std::time::SystemTime::now(),
            latency: Some(Duration::from_millis(2)),
        };
        m.event(&BanEvent::Banned(b.clone()));
        b.latency = None;
        m.event(&BanEvent::Banned(b));
        let mut groups = BTreeMap::new();
        groups.insert(
            ("sasl".to_string(), Fam::Ipv4),
            Group {
                active: 2,
                dropped: 40,
            },
        );
        let text = m.render(crate::metrics::Sample {
            status: Status::gather(&inst, None),
            groups,
        });
        assert!(text.ends_with("# EOF\n"), "{text}");
        for want in [
            "fail2xdp_ban_latency_seconds_count 1\n",
            "fail2xdp_dropped_packets_total{origin=\"sasl\",family=\"ipv4\"} 40\n",
            "fail2xdp_active_bans{origin=\"sasl\",family=\"ipv4\"} 2\n",
            "fail2xdp_protection{state=\"off\"} 1\n",
            "fail2xdp_dropped_bytes_total 0\n",
            "fail2xdp_build_info{version=",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
    }
}

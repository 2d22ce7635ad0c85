//! Data-plane integration tests: real frames from one network namespace to
//! another through a veth pair, with a real `fail2xdp` agent attached (XDP,
//! native mode) to the receiving veth. Run as root:
//! `cargo test -p fail2xdp-tests --test dataplane` (after `cargo build -p fail2xdp`).
//!
//! The receiver's AF_PACKET socket sits behind XDP, so its per-source counts
//! are the ground truth of what was dropped; the program's own STATS are
//! checked against them. Each test has its own namespaces and pin dir, so
//! they run in parallel. Every "dropped" is checked beside traffic that must
//! pass through the same program, so no test passes by dropping everything,
//! and the counting itself is checked without XDP first.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use fail2xdp_tests::{
    AgentOptions, Lab, NetnsPair, Probe, VlanTag, XdpFilter, find_ban, require_privileges,
};

const N: u64 = 20;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

/// Without any program attached, every frame arrives and is counted once:
/// the counting the other tests rely on is exact.
#[test]
fn harness_counts_every_frame_without_xdp() -> Result<()> {
    require_privileges();
    let pair = NetnsPair::new()?;
    let rx = pair.receiver()?;
    let tx = pair.sender()?;
    let v4 = pair.syn(ip("198.51.100.7"), 25);
    let v6 = pair.syn(ip("2001:db8:1::7"), 25);
    let tagged = pair
        .syn(ip("203.0.113.9"), 465)
        .vlans(&[VlanTag::dot1q(10)]);
    let qinq = pair
        .syn(ip("203.0.113.10"), 587)
        .vlans(&[VlanTag::dot1ad(20), VlanTag::dot1q(30)]);
    for s in [&v4, &v6, &tagged, &qinq] {
        tx.send(s, 50)?;
    }
    rx.settle(&tx)?;
    for s in [&v4, &v6, &tagged, &qinq] {
        assert_eq!(rx.count(s), 50, "{} -> port {}", s.src, s.dport);
    }
    assert!(pair.recv_xdp()?.is_empty());
    Ok(())
}

/// Asserts `banned` is dropped and `clean` passes, N frames each.
fn assert_dropped_and_clean(lab: &Lab, banned: &Probe, clean: &Probe) -> Result<()> {
    assert_eq!(
        lab.delivered(banned, N)?,
        0,
        "banned {} -> :{} got through",
        banned.src,
        banned.dport
    );
    assert_eq!(
        lab.delivered(clean, N)?,
        N,
        "clean {} -> :{} was dropped",
        clean.src,
        clean.dport
    );
    Ok(())
}

#[test]
fn exact_ipv4_ban_drops_that_source_only() -> Result<()> {
    let lab = Lab::start()?;
    // The default is native XDP, which veth supports.
    let prog = lab.agent.link_info()?.prog_id;
    assert_eq!(lab.pair.recv_xdp()?, vec![format!("native id {prog}")]);
    let banned = lab.syn("198.51.100.7", 25);
    let clean = lab.syn("198.51.100.8", 25);
    assert_eq!(lab.delivered(&banned, N)?, N, "passes before the ban");
    lab.agent.ban("198.51.100.7", &[])?;
    let before = lab.agent.stats()?;
    assert_dropped_and_clean(&lab, &banned, &clean)?;
    // A ban without ports covers every port and protocol.
    assert_dropped_and_clean(
        &lab,
        &lab.udp("198.51.100.7", 53),
        &lab.udp("198.51.100.8", 53),
    )?;
    let after = lab.agent.stats()?;
    assert_eq!(after.drop_exact_v4 - before.drop_exact_v4, 2 * N);
    assert_eq!(after.drop_pkts - before.drop_pkts, 2 * N);
    assert!(after.pass_pkts - before.pass_pkts >= N);
    // `status --json` reports the program's counters and the map fill.
    let st = lab.agent.status_json()?;
    let counter = |k: &str| st["data_plane"]["counters"][k].as_u64();
    assert_eq!(counter("drop_exact_v4"), Some(after.drop_exact_v4), "{st}");
    assert_eq!(counter("drop_pkts"), Some(after.drop_pkts), "{st}");
    let bans_v4 = st["data_plane"]["maps"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["map"] == "BANS_V4"));
    assert_eq!(bans_v4.and_then(|m| m["entries"].as_u64()), Some(1), "{st}");
    Ok(())
}

#[test]
fn exact_ipv6_ban_drops_that_source_only() -> Result<()> {
    let lab = Lab::start()?;
    let banned = lab.syn("2001:db8:1::7", 25);
    let clean = lab.syn("2001:db8:1::8", 25);
    assert_eq!(lab.delivered(&banned, N)?, N, "passes before the ban");
    lab.agent.ban("2001:db8:1::7", &[])?;
    let before = lab.agent.stats()?;
    assert_dropped_and_clean(&lab, &banned, &clean)?;
    let after = lab.agent.stats()?;
    assert_eq!(after.drop_exact_v6 - before.drop_exact_v6, N);
    assert_eq!(after.drop_pkts - before.drop_pkts, N);
    Ok(())
}

#[test]
fn cidr_bans_drop_the_whole_prefix() -> Result<()> {
    let lab = Lab::start()?;
    lab.agent.ban("198.51.100.0/24", &[])?;
    lab.agent.ban("2001:db8:1:2::/64", &[])?;
    let before = lab.agent.stats()?;
    for src in ["198.51.100.1", "198.51.100.77", "198.51.100.255"] {
        assert_dropped_and_clean(&lab, &lab.syn(src, 25), &lab.syn("203.0.113.9", 25))?;
    }
    for src in ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe"] {
        // Just outside the /64 on both sides.
        assert_dropped_and_clean(&lab, &lab.syn(src, 25), &lab.syn("2001:db8:1:3::1", 25))?;
        assert_eq!(
            lab.delivered(&lab.syn("2001:db8:1:1:ffff:ffff:ffff:ffff", 25), N)?,
            N
        );
    }
    let after = lab.agent.stats()?;
    assert_eq!(after.drop_prefix_v4 - before.drop_prefix_v4, 3 * N);
    assert_eq!(after.drop_prefix_v6 - before.drop_prefix_v6, 2 * N);
    Ok(())
}

#[test]
fn port_scoped_ban_drops_only_its_ports() -> Result<()> {
    let lab = Lab::start()?;
    lab.agent.ban("198.51.100.7", &["--ports", "25,465,587"])?;
    lab.agent.ban("2001:db8:1::7", &["--ports", "25,465,587"])?;
    let before = lab.agent.stats()?;
    for src in ["198.51.100.7", "2001:db8:1::7"] {
        for port in [25, 465, 587] {
            assert_eq!(
                lab.delivered(&lab.syn(src, port), N)?,
                0,
                "{src} -> :{port}"
            );
        }
        for port in [80, 24, 26, 993] {
            assert_eq!(
                lab.delivered(&lab.syn(src, port), N)?,
                N,
                "{src} -> :{port}"
            );
        }
        // The port set is for UDP too.
        assert_eq!(lab.delivered(&lab.udp(src, 587), N)?, 0, "{src} -> udp:587");
        assert_eq!(lab.delivered(&lab.udp(src, 53), N)?, N, "{src} -> udp:53");
    }
    let after = lab.agent.stats()?;
    assert_eq!(after.drop_pkts - before.drop_pkts, 8 * N);
    assert_eq!(after.pass_other_port - before.pass_other_port, 10 * N);
    Ok(())
}

#[test]
fn vlan_tagged_frames_are_filtered_like_untagged() -> Result<()> {
    let lab = Lab::start()?;
    lab.agent.ban("198.51.100.7", &[])?;
    lab.agent.ban("2001:db8:1::7", &[])?;
    let tag_sets: [&[VlanTag]; 3] = [
        &[VlanTag::dot1q(100)],
        &[VlanTag::dot1ad(200), VlanTag::dot1q(100)],
        &[VlanTag::dot1q(300), VlanTag::dot1q(100)],
    ];
    for tags in tag_sets {
        for (bad, good) in [
            ("198.51.100.7", "198.51.100.8"),
            ("2001:db8:1::7", "2001:db8:1::8"),
        ] {
            let banned = lab.syn(bad, 25).vlans(tags);
            let clean = lab.syn(good, 25).vlans(tags);
            assert_dropped_and_clean(&lab, &banned, &clean)
                .with_context(|| format!("tags {tags:?}"))?;
        }
    }
    Ok(())
}

#[test]
fn expired_ban_passes_without_the_agent() -> Result<()> {
    let mut lab = Lab::start()?;
    let banned = lab.syn("198.51.100.7", 25);
    let v6 = lab.syn("2001:db8:1::7", 25);
    let ttl = Duration::from_secs(2);
    let before_ban = Instant::now();
    lab.agent.ban("198.51.100.7", &["--for", "2s"])?;
    lab.agent.ban("2001:db8:1::/64", &["--for", "2s"])?;
    let after_ban = Instant::now();
    assert_eq!(lab.delivered(&banned, N)?, 0, "dropped while the ban lasts");
    assert_eq!(lab.delivered(&v6, N)?, 0, "dropped while the ban lasts");
    // Otherwise the drops above say nothing about the ban's length.
    assert!(
        before_ban.elapsed() < ttl,
        "machine too slow: the ban expired before it was checked"
    );
    // Nothing in userspace may remove the entries now: expiry is the kernel's job.
    lab.agent.kill9()?;
    std::thread::sleep(
        (after_ban + ttl + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
    );
    let before = lab.agent.stats()?;
    assert_eq!(lab.delivered(&banned, N)?, N, "passes after expiry");
    assert_eq!(lab.delivered(&v6, N)?, N, "passes after expiry");
    let after = lab.agent.stats()?;
    assert_eq!(after.pass_expired - before.pass_expired, 2 * N);
    Ok(())
}

#[test]
fn unban_lets_the_source_through_again() -> Result<()> {
    let lab = Lab::start()?;
    let banned = lab.syn("198.51.100.7", 25);
    let banned6 = lab.syn("2001:db8:1::5", 25);
    lab.agent.ban("198.51.100.7", &[])?;
    lab.agent.ban("2001:db8:1::/64", &[])?;
    assert_eq!(lab.delivered(&banned, N)?, 0);
    assert_eq!(lab.delivered(&banned6, N)?, 0);
    lab.agent.unban("198.51.100.7")?;
    lab.agent.unban("2001:db8:1::/64")?;
    assert_eq!(lab.delivered(&banned, N)?, N);
    assert_eq!(lab.delivered(&banned6, N)?, N);
    Ok(())
}

/// The pinned link keeps the program attached when the agent dies, and a
/// restart replaces the program without a gap: a banned source never gets
/// a single frame through while a flood runs across both.
#[test]
fn kill9_and_restart_during_a_flood_leak_nothing() -> Result<()> {
    let mut lab = Lab::start()?;
    lab.agent.ban("198.51.100.7", &[])?;
    lab.agent.ban("2001:db8:1::/64", &[])?;
    let syns = [
        lab.syn("198.51.100.7", 25),
        lab.syn("203.0.113.9", 25),
        lab.syn("2001:db8:1::7", 25),
        lab.syn("2001:db8:2::9", 25),
    ];
    let stop = AtomicBool::new(false);
    let sent = std::thread::scope(|s| -> Result<Vec<u64>> {
        let flood = s.spawn(|| lab.tx.flood(&syns, &stop, Duration::from_secs(20)));
        let result = (|| -> Result<()> {
            std::thread::sleep(Duration::from_millis(400));
            lab.agent.kill9()?;
            std::thread::sleep(Duration::from_millis(400));
            lab.agent.spawn()?;
            std::thread::sleep(Duration::from_millis(400));
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let sent = flood
            .join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
        result?;
        Ok(sent)
    })?;
    lab.rx.settle(&lab.tx)?;
    let got: Vec<u64> = syns.iter().map(|s| lab.rx.count(s)).collect();
    eprintln!("sent {sent:?}, received {got:?}");
    assert!(
        sent.iter().all(|&n| n > 100),
        "flood too small to mean anything: {sent:?}"
    );
    assert_eq!(got[0], 0, "banned IPv4 source leaked");
    assert_eq!(got[2], 0, "banned IPv6 source leaked");
    // Clean traffic loses nothing either: the link never goes away and the
    // flood is paced well below what a veth ring holds.
    assert_eq!(
        (got[1], got[3]),
        (sent[1], sent[3]),
        "clean sources lost frames"
    );
    Ok(())
}

/// A restart finds the pins: bans made by the CLI while no agent ran are
/// enforced, the link is the same, and there is still one XDP program on
/// the interface.
#[test]
fn restart_reuses_pins_without_a_second_attach() -> Result<()> {
    let mut lab = Lab::start()?;
    lab.agent.ban("198.51.100.7", &[])?;
    let first = lab.agent.link_info()?;
    assert_eq!(
        lab.pair.recv_xdp()?,
        vec![format!("native id {}", first.prog_id)]
    );
    let status = lab.agent.stop()?;
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM is a clean stop: {status:?}"
    );
    assert!(
        lab.agent.link_pin().exists(),
        "a stopped agent leaves its program attached"
    );
    lab.agent.ban("2001:db8:1::7", &[])?;
    lab.agent.ban("203.0.113.0/24", &[])?;
    assert_eq!(
        lab.delivered(&lab.syn("2001:db8:1::7", 25), N)?,
        0,
        "ban made while stopped"
    );
    lab.agent.spawn()?;
    let second = lab.agent.link_info()?;
    assert_eq!(second.id, first.id, "the pinned link is reused");
    assert_ne!(
        second.prog_id, first.prog_id,
        "the program is replaced in place"
    );
    assert_eq!(
        lab.pair.recv_xdp()?,
        vec![format!("native id {}", second.prog_id)]
    );
    for src in ["198.51.100.7", "2001:db8:1::7", "203.0.113.50"] {
        assert_eq!(
            lab.delivered(&lab.syn(src, 25), N)?,
            0,
            "{src} after restart"
        );
    }
    assert_eq!(lab.delivered(&lab.syn("198.51.100.8", 25), N)?, N);
    let bans = lab.agent.list_json()?;
    for net in ["198.51.100.7", "2001:db8:1::7", "203.0.113.0/24"] {
        assert!(
            find_ban(&bans, net).is_some(),
            "{net} missing from list --json: {bans}"
        );
    }
    Ok(())
}

#[test]
fn allowlist_beats_a_covering_cidr_ban() -> Result<()> {
    let lab = Lab::start()?;
    lab.agent.ban("198.51.100.0/24", &[])?;
    lab.agent.ban("2001:db8:1::/48", &[])?;
    lab.agent.allow_add("198.51.100.7")?;
    lab.agent.allow_add("2001:db8:1:5::/64")?;
    let before = lab.agent.stats()?;
    assert_dropped_and_clean(
        &lab,
        &lab.syn("198.51.100.8", 25),
        &lab.syn("198.51.100.7", 25),
    )?;
    assert_dropped_and_clean(
        &lab,
        &lab.syn("2001:db8:1:6::1", 25),
        &lab.syn("2001:db8:1:5::1", 25),
    )?;
    let after = lab.agent.stats()?;
    assert_eq!(after.pass_allowlisted - before.pass_allowlisted, 2 * N);
    Ok(())
}

#[test]
fn list_json_shows_per_ban_drops_rising() -> Result<()> {
    let lab = Lab::start()?;
    lab.agent.ban("198.51.100.7", &[])?;
    lab.agent.ban("2001:db8:1::/64", &[])?;
    let drops = |net: &str| -> Result<u64> {
        let entry = lab
            .agent
            .ban_entry(net)?
            .with_context(|| format!("{net} not in list --json"))?;
        entry
            .get("drops")
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no numeric drops in {entry}"))
    };
    assert_eq!(drops("198.51.100.7")?, 0);
    assert_eq!(lab.delivered(&lab.syn("198.51.100.7", 25), 10)?, 0);
    assert_eq!(drops("198.51.100.7")?, 10);
    assert_eq!(lab.delivered(&lab.syn("198.51.100.7", 587), 15)?, 0);
    assert_eq!(drops("198.51.100.7")?, 25);
    assert_eq!(lab.delivered(&lab.syn("2001:db8:1::9", 25), 7)?, 0);
    assert_eq!(drops("2001:db8:1::/64")?, 7);
    assert_eq!(
        drops("198.51.100.7")?,
        25,
        "another ban's drops are not counted here"
    );
    Ok(())
}

/// A frame the parser cannot read is passed, never dropped, even when the
/// source address it would carry is banned. A readable IP header is enough
/// for an all-ports ban; a port-scoped ban needs the port, and passes without.
#[test]
fn unreadable_frames_from_a_banned_source_pass() -> Result<()> {
    let lab = Lab::start()?;
    lab.agent.ban("198.51.100.7", &[])?;
    lab.agent.ban("2001:db8:1::7", &[])?;
    lab.agent.ban("198.51.100.9", &["--ports", "25"])?;
    let cut = |syn: Probe, len: usize| -> Vec<u8> {
        let mut f = syn.min_len(0).frame();
        f.truncate(len);
        f
    };
    let v4 = lab.syn("198.51.100.7", 25);
    let v6 = lab.syn("2001:db8:1::7", 25);
    let scoped = lab.syn("198.51.100.9", 25);
    // (sent, as the receiver sees it: the kernel moves an outer VLAN tag out of the frame)
    let mut passes = vec![
        (cut(v4.clone(), 14), None),      // EtherType IPv4, no header at all
        (cut(v4.clone(), 14 + 16), None), // source address present, header cut short
        (cut(v6.clone(), 14 + 24), None), // IPv6 source present, rest missing
        (cut(scoped.clone(), 14 + 20 + 2), None), // port-scoped ban, no destination port
    ];
    let tagged = cut(v4.clone().vlans(&[VlanTag::dot1q(5)]), 18 + 12);
    let mut untagged = tagged.clone();
    untagged.drain(12..16);
    passes.push((tagged, Some(untagged)));
    // All ports banned: the complete IP header decides, the TCP header is not needed.
    let dropped = [cut(v4, 14 + 20 + 2), cut(v6, 14 + 40)];
    let before = lab.agent.stats()?;
    for frame in passes.iter().map(|(f, _)| f).chain(&dropped) {
        for _ in 0..N {
            lab.tx.send_frame(frame)?;
        }
    }
    lab.rx.settle(&lab.tx)?;
    for (sent, seen) in &passes {
        let seen = seen.as_ref().unwrap_or(sent);
        assert_eq!(
            lab.rx.count_frame(seen),
            N,
            "{} byte frame {sent:02x?}",
            sent.len()
        );
    }
    for sent in &dropped {
        assert_eq!(
            lab.rx.count_frame(sent),
            0,
            "{} byte frame {sent:02x?}",
            sent.len()
        );
    }
    let after = lab.agent.stats()?;
    assert_eq!(after.drop_pkts - before.drop_pkts, 2 * N);
    assert!(after.pass_unparsed - before.pass_unparsed >= 4 * N);
    Ok(())
}

/// `detach` takes the program off the interface and removes every pin: the
/// banned source passes again and nothing of the instance is left.
#[test]
fn detach_removes_the_program_and_the_pins() -> Result<()> {
    let mut lab = Lab::start()?;
    lab.agent.ban("198.51.100.7", &[])?;
    let banned = lab.syn("198.51.100.7", 25);
    assert_eq!(lab.delivered(&banned, N)?, 0);
    lab.agent.stop()?;
    lab.agent.cli(&["detach"])?;
    assert!(lab.pair.recv_xdp()?.is_empty(), "program still attached");
    assert!(!lab.agent.pin_dir().exists(), "pins left behind");
    assert_eq!(lab.delivered(&banned, N)?, N);
    Ok(())
}

/// Two instances, each with its own pin dir and interface, share nothing.
#[test]
fn instances_with_their_own_pin_dirs_are_independent() -> Result<()> {
    let a = Lab::start()?;
    let b = Lab::start()?;
    a.agent.ban("198.51.100.7", &[])?;
    b.agent.ban("198.51.100.8", &[])?;
    assert_eq!(a.delivered(&a.syn("198.51.100.7", 25), N)?, 0);
    assert_eq!(a.delivered(&a.syn("198.51.100.8", 25), N)?, N);
    assert_eq!(b.delivered(&b.syn("198.51.100.7", 25), N)?, N);
    assert_eq!(b.delivered(&b.syn("198.51.100.8", 25), N)?, 0);
    assert!(a.agent.ban_entry("198.51.100.8")?.is_none());
    assert!(b.agent.ban_entry("198.51.100.7")?.is_none());
    Ok(())
}

/// A ban the guard refuses (too broad without --force, loopback) fails
/// loudly and drops nothing.
#[test]
fn refused_bans_change_nothing() -> Result<()> {
    let lab = Lab::start()?;
    for target in ["198.0.0.0/8", "2001:db8::/16", "127.0.0.1", "::1"] {
        let out = lab.agent.cli_output(&["ban", target])?;
        assert!(!out.status.success(), "ban {target} was accepted");
        assert!(
            !out.stderr.is_empty(),
            "ban {target} failed without saying why"
        );
    }
    assert_eq!(lab.agent.list_json()?, serde_json::json!([]));
    assert_eq!(lab.delivered(&lab.syn("198.51.100.7", 25), N)?, N);
    assert_eq!(lab.delivered(&lab.syn("2001:db8:1::7", 25), N)?, N);
    Ok(())
}

/// IPv4 options and IPv6 extension headers are legal and the receiving
/// stack accepts them: a port-scoped ban must look past them, or a client
/// could walk around it by adding a few padding bytes.
#[test]
fn port_scoped_ban_looks_past_ip_options_and_extension_headers() -> Result<()> {
    let lab = Lab::start()?;
    lab.agent.ban("198.51.100.7", &["--ports", "25"])?;
    lab.agent.ban("2001:db8:1::7", &["--ports", "25"])?;
    for src in ["198.51.100.7", "2001:db8:1::7"] {
        for n in [1, 3] {
            let to = |port| lab.syn(src, port).ip_options(n);
            assert_eq!(
                lab.delivered(&to(25), N)?,
                0,
                "{src} -> :25 with {n} option units"
            );
            assert_eq!(
                lab.delivered(&to(80), N)?,
                N,
                "{src} -> :80 with {n} option units"
            );
            let vlan = to(25).vlans(&[VlanTag::dot1q(7)]);
            assert_eq!(
                lab.delivered(&vlan, N)?,
                0,
                "{src} -> :25 tagged, {n} option units"
            );
        }
    }
    Ok(())
}

/// Generic (skb) mode, for drivers without native XDP, enforces the same.
#[test]
fn generic_mode_drops_too() -> Result<()> {
    let lab = Lab::start_with(AgentOptions {
        xdp_mode: "generic".into(),
        ..Default::default()
    })?;
    let prog = lab.agent.link_info()?.prog_id;
    assert_eq!(lab.pair.recv_xdp()?, vec![format!("generic id {prog}")]);
    lab.agent.ban("198.51.100.7", &[])?;
    lab.agent.ban("2001:db8:1::/64", &["--ports", "25"])?;
    assert_dropped_and_clean(
        &lab,
        &lab.syn("198.51.100.7", 25),
        &lab.syn("198.51.100.8", 25),
    )?;
    assert_dropped_and_clean(
        &lab,
        &lab.syn("2001:db8:1::7", 25),
        &lab.syn("2001:db8:1::7", 80),
    )?;
    Ok(())
}

/// `ban --file` loads thousands of entries in one go; each is enforced,
/// neighbours are not, and bad lines are reported and skipped.
#[test]
fn ban_file_enforces_every_entry() -> Result<()> {
    let lab = Lab::start()?;
    let mut text = String::from("# bulk import\n\n");
    for i in 1..=250 {
        text.push_str(&format!("198.51.100.{i}\n203.0.113.{i}  # from a feed\n"));
    }
    for i in 1..=2000u32 {
        text.push_str(&format!("2001:db8:5::{i:x}\n"));
    }
    text.push_str("2001:db8:7::/48\nnot-an-address\n198.0.0.0/8\n");
    let file = lab.agent.state_dir().join("bans.txt");
    std::fs::write(&file, text)?;
    let file = file.to_string_lossy().into_owned();
    let out = lab.agent.cli_output(&["ban", "--file", &file])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad lines make the exit code 1: {stderr}"
    );
    assert!(stderr.contains("not-an-address"), "{stderr}");
    assert!(
        stderr.contains("198.0.0.0/8"),
        "the too broad prefix is refused: {stderr}"
    );
    let bans = lab.agent.list_json()?;
    assert_eq!(bans.as_array().map(Vec::len), Some(500 + 2000 + 1));
    for src in [
        "198.51.100.1",
        "198.51.100.250",
        "203.0.113.77",
        "2001:db8:5::1",
        "2001:db8:5::7d0",
        "2001:db8:7:1::1",
    ] {
        assert_eq!(lab.delivered(&lab.syn(src, 25), N)?, 0, "{src}");
    }
    for src in [
        "198.51.100.251",
        "203.0.113.0",
        "2001:db8:5::7d1",
        "2001:db8:8::1",
    ] {
        assert_eq!(lab.delivered(&lab.syn(src, 25), N)?, N, "{src}");
    }
    Ok(())
}

/// Fragments: an all-ports ban needs only the address, so every fragment is
/// dropped; a port-scoped ban sees ports in the first fragment only, and a
/// later fragment (no ports) passes, as an unknown port does.
#[test]
fn fragments_follow_the_scope_of_the_ban() -> Result<()> {
    let lab = Lab::start()?;
    lab.agent.ban("198.51.100.7", &[])?;
    lab.agent.ban("2001:db8:1::7", &[])?;
    lab.agent.ban("198.51.100.9", &["--ports", "25"])?;
    lab.agent.ban("2001:db8:1::9", &["--ports", "25"])?;
    for (all, scoped) in [
        ("198.51.100.7", "198.51.100.9"),
        ("2001:db8:1::7", "2001:db8:1::9"),
    ] {
        let first = |src, port| lab.syn(src, port).fragment(0, true);
        let later = |src| lab.syn(src, 25).fragment(64, false).frame();
        assert_eq!(
            lab.delivered(&first(all, 25), N)?,
            0,
            "{all} first fragment"
        );
        assert_eq!(
            lab.delivered_frame(&later(all), N)?,
            0,
            "{all} later fragment"
        );
        assert_eq!(
            lab.delivered(&first(scoped, 25), N)?,
            0,
            "{scoped} first fragment, :25"
        );
        assert_eq!(
            lab.delivered(&first(scoped, 80), N)?,
            N,
            "{scoped} first fragment, :80"
        );
        assert_eq!(
            lab.delivered_frame(&later(scoped), N)?,
            N,
            "{scoped} later fragment"
        );
    }
    Ok(())
}

/// Bans made before the agent ever ran (the CLI creates the pinned maps)
/// are enforced from the moment it attaches.
#[test]
fn bans_made_before_the_first_start_are_enforced() -> Result<()> {
    require_privileges();
    let pair = NetnsPair::new()?;
    let rx = pair.receiver()?;
    let tx = pair.sender()?;
    let agent = fail2xdp_tests::Agent::new(&pair, AgentOptions::default())?;
    agent.ban("198.51.100.7", &[])?;
    agent.ban("2001:db8:1::/64", &["--ports", "25"])?;
    let lab = Lab {
        agent,
        tx,
        rx,
        pair,
    };
    let banned = lab.syn("198.51.100.7", 25);
    assert_eq!(lab.delivered(&banned, N)?, N, "nothing is attached yet");
    let mut lab = lab;
    lab.agent.spawn()?;
    assert_dropped_and_clean(&lab, &banned, &lab.syn("198.51.100.8", 25))?;
    assert_dropped_and_clean(
        &lab,
        &lab.syn("2001:db8:1::7", 25),
        &lab.syn("2001:db8:1::7", 80),
    )?;
    Ok(())
}

/// Removing an allowlist entry lets the covering ban apply again.
#[test]
fn allowlist_removal_restores_the_ban() -> Result<()> {
    let lab = Lab::start()?;
    lab.agent.ban("198.51.100.0/24", &[])?;
    lab.agent.allow_add("198.51.100.7")?;
    let allowed = lab.syn("198.51.100.7", 25);
    assert_eq!(lab.delivered(&allowed, N)?, N);
    lab.agent.cli(&["allow", "del", "198.51.100.7"])?;
    assert_eq!(lab.delivered(&allowed, N)?, 0);
    Ok(())
}

/// xdp-filter's own count of packets it returned `action` for: its
/// per-CPU stats array holds (packets, bytes) per XDP action.
fn xdp_filter_count(xf: &XdpFilter, action: u32) -> Result<u64> {
    let md = xf.map("xdp_stats_map")?;
    let arr: aya::maps::PerCpuArray<aya::maps::MapData, [u64; 2]> =
        aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(md))?;
    Ok(arr.get(&action, 0)?.iter().map(|v| v[0]).sum())
}

/// When the interface already runs xdp-filter through libxdp's dispatcher,
/// fail2xdp joins it as one more program (ahead of it by run priority)
/// instead of refusing or replacing it: both act on the same veth, a
/// restart swaps fail2xdp's program within the dispatcher, and detaching
/// fail2xdp leaves xdp-filter running alone.
///
/// On a kernel that refuses extension (freplace) programs, libxdp cannot
/// build its dispatcher and attaches xdp-filter on its own; then fail2xdp
/// must refuse to start there, say why, and leave xdp-filter untouched.
/// The test says which of the two it checked.
#[test]
fn joins_libxdps_dispatcher_beside_xdp_filter() -> Result<()> {
    require_privileges();
    let supported = fail2xdp::enforcer::dispatcher_supported()?;
    let pair = NetnsPair::new()?;
    let xf = XdpFilter::load(&pair.recv_ns.path(), &pair.recv_if, false, "allow")?;
    xf.add_src("198.51.100.20")?;
    let dispatcher = pair.recv_xdp()?;
    assert_eq!(dispatcher.len(), 1, "xdp-filter runs: {dispatcher:?}");
    let opts = AgentOptions {
        env: vec![(
            "LIBXDP_BPFFS".into(),
            xf.bpffs().to_string_lossy().into_owned(),
        )],
        ..AgentOptions::default()
    };
    if !supported {
        eprintln!(
            "NOTE: this kernel refuses extension (freplace) programs, so libxdp runs \
             xdp-filter without its dispatcher and there is no dispatcher to join; \
             checking that fail2xdp refuses and leaves xdp-filter running instead"
        );
        return refuses_beside_a_lone_program(&pair, &xf, opts, &dispatcher);
    }
    let mut lab = Lab::on(pair, opts)?;
    assert!(
        !lab.agent.link_pin().exists() && lab.agent.dispatched_pin().exists(),
        "fail2xdp attached on its own instead of joining; log:\n{}",
        lab.agent.log()
    );
    let attached = lab.pair.recv_xdp()?;
    assert_eq!(
        attached.len(),
        1,
        "one program (a dispatcher) on the veth: {attached:?}"
    );
    assert_ne!(attached, dispatcher, "a new dispatcher with both programs");
    lab.agent.ban("198.51.100.7", &[])?;
    let ours = lab.syn("198.51.100.7", 25);
    let theirs = lab.syn("198.51.100.20", 25);
    let clean = lab.syn("198.51.100.8", 25);
    let check = |lab: &Lab, what: &str| -> Result<()> {
        let (s0, f0) = (lab.agent.stats()?, xdp_filter_count(&xf, 1)?);
        assert_eq!(lab.delivered(&ours, N)?, 0, "{what}: fail2xdp's ban");
        assert_eq!(lab.delivered(&theirs, N)?, 0, "{what}: xdp-filter's rule");
        assert_eq!(lab.delivered(&clean, N)?, N, "{what}: clean source");
        let (s1, f1) = (lab.agent.stats()?, xdp_filter_count(&xf, 1)?);
        // fail2xdp runs first: it drops its own, passes the rest on.
        assert_eq!(s1.drop_exact_v4 - s0.drop_exact_v4, N, "{what}");
        assert!(s1.pass_pkts - s0.pass_pkts >= 2 * N, "{what}");
        assert_eq!(f1 - f0, N, "{what}: xdp-filter drops what it names");
        Ok(())
    };
    check(&lab, "joined")?;
    // `status` says where the program sits.
    let st = lab.agent.status_json()?;
    let text = st.to_string();
    assert!(
        text.contains("dispatcher") && text.contains("xdpfilt"),
        "status does not show the dispatcher: {st}"
    );
    // A restart replaces fail2xdp's program inside the dispatcher.
    let before = lab.agent.link_info()?.prog_id;
    lab.agent.kill9()?;
    lab.agent.spawn()?;
    assert_ne!(lab.agent.link_info()?.prog_id, before, "program replaced");
    assert_eq!(lab.pair.recv_xdp()?.len(), 1);
    check(&lab, "after a restart")?;
    // Detaching fail2xdp leaves xdp-filter alone, still filtering.
    lab.agent.stop()?;
    lab.agent.cli(&["detach"])?;
    assert!(!lab.agent.pin_dir().exists(), "pins left behind");
    assert_eq!(lab.pair.recv_xdp()?.len(), 1, "xdp-filter kept running");
    assert_eq!(lab.delivered(&theirs, N)?, 0, "xdp-filter still filters");
    assert_eq!(lab.delivered(&ours, N)?, N, "fail2xdp's ban went with it");
    // xdp-filter can still manage its dispatcher after us.
    drop(xf);
    assert!(
        lab.pair.recv_xdp()?.is_empty(),
        "xdp-filter unloaded cleanly"
    );
    Ok(())
}

/// fail2xdp next to an XDP program attached without libxdp's dispatcher:
/// it refuses, names the other program, and changes nothing there.
fn refuses_beside_a_lone_program(
    pair: &NetnsPair,
    xf: &XdpFilter,
    opts: AgentOptions,
    before: &[String],
) -> Result<()> {
    let mut agent = fail2xdp_tests::Agent::new(pair, opts)?;
    let err = agent
        .spawn()
        .expect_err("fail2xdp attached next to a program that is not libxdp's dispatcher");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("not through libxdp's dispatcher") && msg.contains("xdpfilt"),
        "the refusal does not say what is attached: {msg}"
    );
    assert!(
        msg.contains("refuses extension"),
        "the refusal does not say why no dispatcher can be built: {msg}"
    );
    assert_eq!(pair.recv_xdp()?, before, "xdp-filter was replaced");
    assert!(!agent.link_pin().exists() && !agent.dispatched_pin().exists());
    let (tx, rx) = (pair.sender()?, pair.receiver()?);
    let delivered = |p: &Probe| -> Result<u64> {
        let c = rx.count(p);
        tx.send(p, N)?;
        rx.settle(&tx)?;
        Ok(rx.count(p) - c)
    };
    let f0 = xdp_filter_count(xf, 1)?;
    assert_eq!(
        delivered(&pair.syn(ip("198.51.100.20"), 25))?,
        0,
        "xdp-filter's rule"
    );
    assert_eq!(
        delivered(&pair.syn(ip("198.51.100.8"), 25))?,
        N,
        "clean source"
    );
    assert_eq!(xdp_filter_count(xf, 1)? - f0, N);
    drop(agent);
    Ok(())
}

/// Without another program on the interface, the program keeps its own
/// pinned link (no dispatcher in between).
#[test]
fn alone_it_attaches_directly() -> Result<()> {
    let lab = Lab::start()?;
    assert!(lab.agent.link_pin().exists());
    assert!(!lab.agent.dispatched_pin().exists());
    let st = lab.agent.status_json()?;
    assert!(st.to_string().contains("direct"), "{st}");
    Ok(())
}

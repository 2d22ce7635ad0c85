//! The decision source: every jail ban becomes an alert with its decision
//! (`POST /v1/alerts`), so every other host's bouncer enforces it. Bans are
//! queued on disk first ([`Spool`]), sent in batches, and retried with
//! backoff while the LAPI is down; one whose ban ended while it waited is
//! not sent (there is nothing left to share).
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::mpsc;

use super::{
    Shared,
    api::{Alert, Decision, Event, Meta, Source},
    client::Lapi,
    duration,
    spool::{Pending, Spool},
};
use crate::ban::{BanEvent, LONGEST_BAN, Subscriber};

/// Alerts per request.
const BATCH: usize = 200;
/// How long a first ban waits for others to share its request: a burst
/// goes in one, a single ban is barely delayed.
const GATHER: Duration = Duration::from_millis(20);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The origin of the decisions this source makes: `crowdsec`, as for a
/// CrowdSec agent's own detections, which is what CrowdSec's tools treat as
/// local (`cscli alerts list` shows only `crowdsec` and `cscli` ones by
/// default); the scenario `fail2xdp/<jail>` says who made it.
pub const DECISION_ORIGIN: &str = "crowdsec";

/// Subscribes to the ban service: jail bans go to the pusher.
pub struct PushEvents(pub mpsc::UnboundedSender<Pending>);

impl Subscriber for PushEvents {
    fn event(&self, e: &BanEvent) {
        if let BanEvent::Banned(b) = e
            && let Some(p) = Pending::from_ban(b)
        {
            // The pusher gone (agent stopping): the ban is enforced here,
            // only not shared.
            let _ = self.0.send(p);
        }
    }
}

fn rfc3339(unix: u64) -> String {
    jiff::Timestamp::from_second(i64::try_from(unix).unwrap_or(0))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, and the last
    // byte stays 0, so the result is terminated.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
    if ok && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "?".into()
    }
}

/// The alert for one jail ban, None once the ban has ended.
pub fn alert(p: &Pending, host: &str, now: SystemTime) -> Option<Alert> {
    let left = match p.expires_at {
        None => LONGEST_BAN,
        Some(e) => {
            let left = e.checked_sub(super::spool::unix(now))?;
            if left == 0 {
                return None;
            }
            Duration::from_secs(left)
        }
    };
    let single = p.net.prefix_len() == p.net.max_prefix_len();
    let (scope, value) = if single {
        ("Ip", p.net.addr().to_string())
    } else {
        ("Range", p.net.to_string())
    };
    let scenario = format!("fail2xdp/{}", p.jail);
    let meta = |k: &str, v: &str| Meta {
        key: k.to_owned(),
        value: v.to_owned(),
    };
    let mut events: Vec<Event> = p
        .evidence
        .iter()
        .map(|line| Event {
            timestamp: rfc3339(p.last_seen),
            meta: vec![
                meta("log_line", line),
                meta("source_ip", &value),
                meta("jail", &p.jail),
                meta("machine", host),
            ],
        })
        .collect();
    if events.is_empty() {
        events.push(Event {
            timestamp: rfc3339(p.last_seen),
            meta: vec![
                meta("source_ip", &value),
                meta("jail", &p.jail),
                meta("machine", host),
            ],
        });
    }
    Some(Alert {
        scenario: scenario.clone(),
        scenario_hash: String::new(),
        scenario_version: String::new(),
        message: format!(
            "{value} banned by fail2xdp jail {} on {host} after {} failure(s): {}",
            p.jail, p.failures, p.reason
        ),
        events_count: i32::try_from(p.failures.max(1)).unwrap_or(i32::MAX),
        start_at: rfc3339(p.first_seen),
        stop_at: rfc3339(p.last_seen),
        capacity: 0,
        leakspeed: "0".into(),
        simulated: false,
        events,
        source: Source {
            scope: scope.into(),
            value: value.clone(),
            ip: if single { value.clone() } else { String::new() },
            range: if single { String::new() } else { value.clone() },
        },
        decisions: vec![Decision {
            id: 0,
            origin: DECISION_ORIGIN.into(),
            kind: "ban".into(),
            scope: scope.into(),
            value,
            duration: duration::format(left),
            scenario,
            simulated: None,
            until: None,
        }],
        remediation: true,
    })
}

fn lock(s: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends to the queue on disk (off the async workers: it syncs).
async fn save(spool: &Arc<Mutex<Spool>>, new: Vec<Pending>, shared: &Shared) {
    if new.is_empty() {
        return;
    }
    let s = spool.clone();
    let r = tokio::task::spawn_blocking(move || {
        let mut s = lock(&s);
        let r = s.push(new);
        (r, s.len(), s.dropped)
    })
    .await;
    match r {
        Ok((Err(e), ..)) => {
            log::error!("crowdsec: {}", crate::error_chain(&e));
            shared.push_failed(&crate::error_chain(&e));
        }
        Ok((Ok(()), len, dropped)) => {
            shared.push_queue(len);
            shared.push_dropped(dropped);
        }
        Err(_) => {}
    }
}

/// Runs until the ban service's subscriber is gone and the queue is empty.
pub async fn run(
    lapi: Arc<Lapi>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    spool: Spool,
    shared: Arc<Shared>,
) {
    let host = hostname();
    // Logging in costs the LAPI a password hash (a third of a second):
    // done now, not when the first ban waits for it.
    if let Err(e) = lapi.login().await {
        log::warn!("crowdsec: machine login: {}", crate::error_chain(&e));
    }
    let spool = Arc::new(Mutex::new(spool));
    let mut retry_at: Option<Instant> = None;
    let mut backoff = MIN_BACKOFF;
    let mut open = true;
    shared.push_queue(lock(&spool).len());
    loop {
        // Everything waiting goes to disk first.
        let mut new = Vec::new();
        while let Ok(p) = rx.try_recv() {
            new.push(p);
        }
        save(&spool, new, &shared).await;
        let waiting = lock(&spool).len();
        if waiting > 0 && retry_at.is_none_or(|t| Instant::now() >= t) {
            let batch = lock(&spool).front(BATCH);
            let now = SystemTime::now();
            let alerts: Vec<Alert> = batch.iter().filter_map(|p| alert(p, &host, now)).collect();
            let expired = batch.len() - alerts.len();
            let sent = if alerts.is_empty() {
                Ok(0)
            } else {
                lapi.push(&alerts).await
            };
            match sent {
                Ok(_) => {
                    let s = spool.clone();
                    let n = batch.len();
                    let r = tokio::task::spawn_blocking(move || {
                        let mut s = lock(&s);
                        (s.done(n), s.len())
                    })
                    .await;
                    if let Ok((Err(e), _)) = &r {
                        log::error!("crowdsec: {}", crate::error_chain(e));
                    }
                    let left = r.map_or(waiting - n, |(_, l)| l);
                    shared.pushed(alerts.len(), expired, left);
                    if retry_at.is_some() {
                        log::info!("crowdsec: pushing jail bans again ({left} still queued)");
                    }
                    retry_at = None;
                    backoff = MIN_BACKOFF;
                    continue;
                }
                Err(e) => {
                    if retry_at.is_none() {
                        log::warn!(
                            "crowdsec: pushing {} jail ban(s): {}; queued on disk, retrying",
                            alerts.len(),
                            crate::error_chain(&e)
                        );
                    }
                    shared.push_failed(&crate::error_chain(&e));
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if !open && lock(&spool).is_empty() {
            return;
        }
        let sleep_until = retry_at.map(tokio::time::Instant::from_std);
        tokio::select! {
            p = rx.recv(), if open => match p {
                Some(p) => {
                    // Give a burst a moment to join this request.
                    let mut first = vec![p];
                    tokio::time::sleep(GATHER).await;
                    while let Ok(p) = rx.try_recv() {
                        first.push(p);
                    }
                    save(&spool, first, &shared).await;
                }
                None => open = false,
            },
            () = async {
                match sleep_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(net: &str, expires_in: Option<u64>) -> Pending {
        let now = super::super::spool::unix(SystemTime::now());
        Pending {
            net: net.parse().unwrap(),
            jail: "postfix-sasl".into(),
            reason: "filter postfix-sasl failregex #0".into(),
            evidence: vec!["line one".into(), "line two".into()],
            failures: 5,
            first_seen: now - 60,
            last_seen: now - 1,
            banned_at: now,
            expires_at: expires_in.map(|s| now + s),
        }
    }

    #[test]
    fn a_jail_ban_becomes_an_alert_with_its_decision() {
        let a = alert(
            &pending("198.51.100.7/32", Some(3600)),
            "mx1",
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(a.scenario, "fail2xdp/postfix-sasl");
        assert_eq!(
            (a.source.scope.as_str(), a.source.value.as_str()),
            ("Ip", "198.51.100.7")
        );
        assert_eq!(a.source.ip, "198.51.100.7");
        assert_eq!(a.events_count, 5);
        assert_eq!(a.events.len(), 2);
        assert!(a.events[0].meta.iter().any(|m| m.value == "line one"));
        let d = &a.decisions[0];
        assert_eq!(
            (d.kind.as_str(), d.scope.as_str(), d.origin.as_str()),
            ("ban", "Ip", "crowdsec")
        );
        // The time left, whole seconds, as Go reads it.
        let left = duration::GoDuration::parse(&d.duration)
            .unwrap()
            .magnitude
            .as_secs();
        assert!((3598..=3600).contains(&left), "{}", d.duration);
        // JSON as LAPI's model names it.
        let v = serde_json::to_value(&a).unwrap();
        for k in [
            "scenario_hash",
            "scenario_version",
            "leakspeed",
            "capacity",
            "simulated",
            "start_at",
            "stop_at",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["decisions"][0]["type"], "ban");
        assert!(
            v["decisions"][0].get("id").is_none(),
            "no id for a new decision"
        );
    }

    #[test]
    fn a_prefix_ban_is_a_range_and_an_ended_one_is_not_sent() {
        let a = alert(&pending("2001:db8:5::/64", None), "mx1", SystemTime::now()).unwrap();
        assert_eq!(
            (a.source.scope.as_str(), a.source.range.as_str()),
            ("Range", "2001:db8:5::/64")
        );
        assert_eq!(a.decisions[0].value, "2001:db8:5::/64");
        assert_eq!(
            a.decisions[0].duration, "876000h0m0s",
            "permanent: 100 years"
        );
        let mut p = pending("198.51.100.7/32", Some(10));
        p.expires_at = Some(p.banned_at - 5);
        assert!(alert(&p, "mx1", SystemTime::now()).is_none());
    }
}

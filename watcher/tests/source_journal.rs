//! The journal source, on journal files written by systemd-journal-remote (no journald
//! runs in the test environment). Needs the Debian package systemd-journal-remote.

mod source_util;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fail2xdp::source::{self, Position, SourceOptions, SourceSpec};
use source_util::{MemPositions, quiet, start, take, texts};

const BOOT_ID: &str = "0123456789abcdef0123456789abcdef";

fn journal_remote() -> PathBuf {
    [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("systemd-journal-remote is missing: apt-get install systemd-journal-remote")
}

struct Entry<'a> {
    realtime_us: i64,
    ident: &'a str,
    pid: u32,
    unit: &'a str,
    message: &'a [u8],
}

/// Journal export format; MESSAGE in the binary-safe form so any bytes can be written.
fn export(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut o = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        write!(
            o,
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={BOOT_ID}\n\
             _HOSTNAME=mx\nSYSLOG_IDENTIFIER={}\nSYSLOG_PID={}\n_PID={}\n_SYSTEMD_UNIT={}\n",
            e.realtime_us,
            (e.realtime_us % 1_000_000_000) as usize + i,
            e.ident,
            e.pid,
            e.pid,
            e.unit
        )
        .expect("write");
        o.extend_from_slice(b"MESSAGE\n");
        o.extend_from_slice(&(e.message.len() as u64).to_le_bytes());
        o.extend_from_slice(e.message);
        o.extend_from_slice(b"\n\n");
    }
    o
}

/// Append entries to a journal file (created if missing).
fn write_journal(path: &Path, entries: &[Entry<'_>]) {
    let mut child = Command::new(journal_remote())
        .arg(format!("--output={}", path.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run systemd-journal-remote");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&export(entries))
        .expect("feed journal-remote");
    let out = child.wait_with_output().expect("journal-remote");
    assert!(
        out.status.success(),
        "journal-remote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

fn smtpd<'a>(t: i64, msg: &'a str) -> Entry<'a> {
    Entry {
        realtime_us: t,
        ident: "postfix/smtpd",
        pid: 4242,
        unit: "postfix@-.service",
        message: msg.as_bytes(),
    }
}

fn dovecot<'a>(t: i64, msg: &'a str) -> Entry<'a> {
    Entry {
        realtime_us: t,
        ident: "dovecot",
        pid: 77,
        unit: "dovecot.service",
        message: msg.as_bytes(),
    }
}

const FAIL: &str = "warning: unknown[203.0.113.5]: SASL LOGIN authentication failed: UGFzc3dvcmQ6";

fn spec(file: &Path, matches: &[&str]) -> SourceSpec {
    SourceSpec::Journal {
        matches: matches.iter().map(|s| s.to_string()).collect(),
        file: Some(file.to_path_buf()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_entries_arrive_as_syslog_lines_with_realtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = dir.path().join("mail.journal");
    let t0 = now_us() - 10_000_000;
    write_journal(
        &j,
        &[
            smtpd(t0, "old entry before the start"),
            dovecot(t0 + 1, "old"),
        ],
    );

    let (h, mut rx) = start(
        spec(&j, &["SYSLOG_IDENTIFIER=postfix/smtpd"]),
        source_util::opts(),
        64,
    )
    .await
    .expect("spawn");
    assert!(h.name().starts_with("journal:"), "{}", h.name());
    // Written right after spawn returned: must not be lost to journalctl's start-up.
    let t1 = now_us();
    write_journal(
        &j,
        &[
            smtpd(t1, FAIL),
            dovecot(
                t1 + 1,
                "imap-login: Disconnected (auth failed, 1 attempts): rip=203.0.113.6",
            ),
            smtpd(
                t1 + 2,
                "connect from unknown[203.0.113.7]\nunknown[198.51.100.9]: forged",
            ),
        ],
    );
    let got = take(&mut rx, 2, 10).await;
    assert_eq!(
        texts(&got),
        [
            format!("postfix/smtpd[4242]: {FAIL}"),
            // A newline inside a message must not start a second line.
            "postfix/smtpd[4242]: connect from unknown[203.0.113.7]#012unknown[198.51.100.9]: forged"
                .to_string(),
        ]
    );
    assert_eq!(
        got[0].time,
        Some(jiff::Timestamp::from_microsecond(t1).expect("ts"))
    );
    assert_eq!(
        got[1].time,
        Some(jiff::Timestamp::from_microsecond(t1 + 2).expect("ts"))
    );
    quiet(&mut rx, 500).await;

    // Still following: later appends arrive too.
    write_journal(&j, &[smtpd(t1 + 3, "disconnect from unknown[203.0.113.5]")]);
    let got = take(&mut rx, 1, 10).await;
    assert_eq!(
        got[0].text,
        "postfix/smtpd[4242]: disconnect from unknown[203.0.113.5]"
    );
    assert_eq!(h.stats().lines, 3);
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_repaired_or_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = dir.path().join("mail.journal");
    let t = now_us();
    write_journal(&j, &[dovecot(t, "start")]);
    let (h, mut rx) = start(
        spec(&j, &["_SYSTEMD_UNIT=dovecot.service"]),
        source_util::opts(),
        64,
    )
    .await
    .expect("spawn");
    let huge = "x".repeat(source::MAX_LINE + 1);
    let mut e_bad = dovecot(t + 1, "");
    e_bad.message = b"auth: bad \xff\xfe bytes";
    let mut e_nul = dovecot(t + 2, "");
    e_nul.message = b"auth: a \0 nul";
    write_journal(
        &j,
        &[
            e_bad,
            e_nul,
            dovecot(t + 3, &huge),
            dovecot(t + 4, "auth: good line"),
        ],
    );
    let got = take(&mut rx, 3, 10).await;
    assert_eq!(
        texts(&got),
        [
            "dovecot[77]: auth: bad \u{FFFD}\u{FFFD} bytes",
            "dovecot[77]: auth: a #000 nul",
            "dovecot[77]: auth: good line"
        ]
    );
    quiet(&mut rx, 300).await;
    let st = h.stats();
    assert_eq!(
        (
            st.replaced_invalid_utf8,
            st.replaced_nul,
            st.skipped_too_long,
            st.lines
        ),
        (1, 1, 1, 3),
        "{st:?}"
    );
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_cursor_resumes_after_restart_and_directories_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jdir = dir.path().join("journal");
    std::fs::create_dir(&jdir).expect("mkdir");
    let j = jdir.join("remote.journal");
    let saved = Arc::new(MemPositions::default());
    let t = now_us() - 5_000_000;
    let msgs: Vec<String> = (0..5).map(|i| format!("{FAIL} #{i}")).collect();
    let first: Vec<Entry<'_>> = (0..3).map(|i| smtpd(t + i as i64, &msgs[i])).collect();
    write_journal(&j, &first);
    let opts = SourceOptions {
        positions: Some(saved.clone()),
        journal_from_start: true,
        ..source_util::opts()
    };
    let (h, mut rx) = start(
        spec(&jdir, &["SYSLOG_IDENTIFIER=postfix/smtpd"]),
        opts.clone(),
        64,
    )
    .await
    .expect("spawn");
    let got = take(&mut rx, 3, 10).await;
    assert_eq!(got[2].text, format!("postfix/smtpd[4242]: {}", msgs[2]));
    h.join().await;
    let Some(Position::Journal { cursor }) = saved.get() else {
        panic!("no cursor saved on stop: {:?}", saved.get());
    };
    assert!(cursor.starts_with("s="), "{cursor:?}");

    // Written while the agent is down; the restarted source delivers only these.
    write_journal(&j, &[smtpd(t + 3, &msgs[3]), smtpd(t + 4, &msgs[4])]);
    let (h, mut rx) = start(spec(&jdir, &["SYSLOG_IDENTIFIER=postfix/smtpd"]), opts, 64)
        .await
        .expect("spawn");
    let got = take(&mut rx, 2, 10).await;
    assert_eq!(
        texts(&got),
        [
            format!("postfix/smtpd[4242]: {}", msgs[3]),
            format!("postfix/smtpd[4242]: {}", msgs[4])
        ]
    );
    quiet(&mut rx, 500).await;
    h.join().await;
}

#[tokio::test]
async fn bad_journal_specs_are_errors() {
    let opts = source_util::opts;
    let e = start(spec(Path::new("/nonexistent/x.journal"), &[]), opts(), 1)
        .await
        .expect_err("missing file");
    assert!(e.to_string().contains("/nonexistent/x.journal"), "{e}");
    let dir = tempfile::tempdir().expect("tempdir");
    let j = dir.path().join("a.journal");
    write_journal(&j, &[dovecot(now_us(), "x")]);
    let e = start(spec(&j, &["--since=yesterday"]), opts(), 1)
        .await
        .expect_err("option smuggled as a match");
    assert!(e.to_string().contains("--since"), "{e}");
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_journalctl_is_restarted_after_its_last_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = dir.path().join("mail.journal");
    // A journalctl that quits after a second, as a crash would.
    let wrapper = dir.path().join("journalctl");
    std::fs::write(&wrapper, "#!/bin/sh\nexec timeout 1 journalctl \"$@\"\n").expect("write");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let t = now_us();
    let msgs: Vec<String> = (0..5).map(|i| format!("{FAIL} #{i}")).collect();
    write_journal(&j, &[smtpd(t, &msgs[0]), smtpd(t + 1, &msgs[1])]);
    let opts = SourceOptions {
        journal_from_start: true,
        journalctl: wrapper,
        ..source_util::opts()
    };
    let (h, mut rx) = start(spec(&j, &[]), opts, 64).await.expect("spawn");
    let mut got = texts(&take(&mut rx, 2, 10).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    write_journal(&j, &[smtpd(t + 2, &msgs[2]), smtpd(t + 3, &msgs[3])]);
    got.extend(texts(&take(&mut rx, 2, 10).await));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    write_journal(&j, &[smtpd(t + 4, &msgs[4])]);
    got.extend(texts(&take(&mut rx, 1, 10).await));
    quiet(&mut rx, 1500).await;
    let want: Vec<String> = msgs
        .iter()
        .map(|m| format!("postfix/smtpd[4242]: {m}"))
        .collect();
    assert_eq!(got, want);
    assert!(h.stats().files_opened >= 3, "{:?}", h.stats());
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_what_was_written_while_down_even_if_nothing_came_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = dir.path().join("mail.journal");
    let t = now_us();
    write_journal(&j, &[smtpd(t, "before the first start")]);
    let opts = SourceOptions {
        positions: Some(Arc::new(MemPositions::default())),
        ..source_util::opts()
    };
    let (h, mut rx) = start(spec(&j, &[]), opts.clone(), 64).await.expect("spawn");
    quiet(&mut rx, 300).await;
    h.join().await;
    write_journal(&j, &[smtpd(t + 1, "while down")]);
    let (h, mut rx) = start(spec(&j, &[]), opts, 64).await.expect("spawn");
    let got = take(&mut rx, 1, 10).await;
    assert_eq!(got[0].text, "postfix/smtpd[4242]: while down");
    quiet(&mut rx, 300).await;
    h.join().await;
}

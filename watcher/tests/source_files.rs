//! Tailed log files: appends, partial lines, rotation, copytruncate, globs, bad input.

mod source_util;

use std::time::Duration;

use fail2xdp::source::{self, SourceSpec};
use source_util::*;
use tokio::sync::mpsc;

fn files(glob: &std::path::Path, from_start: bool) -> SourceSpec {
    SourceSpec::Files {
        globs: vec![glob.display().to_string()],
        from_start,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_lines_arrive_once_in_order_and_partial_lines_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..3));
    // The file ends in the middle of a line: that fragment must not show up either.
    append(&log, "Nov 22 05:39:59 mx postfix/smtpd[9]: half a li");
    let (tx, mut rx) = mpsc::channel(64);
    let h = source::spawn_with(files(&log, false), opts(), tx)
        .await
        .expect("spawn");
    append(&log, "ne\n");
    let mut want = Vec::new();
    for chunk in 0..10 {
        let r = 10 + chunk * 50..10 + (chunk + 1) * 50;
        append(&log, &lines(r.clone()));
        want.extend(expect(r));
        if chunk % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let got = take(&mut rx, want.len(), 10).await;
    assert_eq!(texts(&got), want);
    assert!(
        got.iter()
            .all(|l| &*l.source == log.to_str().unwrap_or_default() && l.time.is_none())
    );

    // A line written in two pieces is held until its newline arrives.
    let line = postfix(999);
    let (a, b) = line.split_at(25);
    append(&log, a);
    quiet(&mut rx, 400).await;
    append(&log, &format!("{b}\n"));
    let got = take(&mut rx, 1, 5).await;
    assert_eq!(got[0].text, line);
    quiet(&mut rx, 400).await;
    let st = h.stats();
    assert_eq!(st.lines, 501);
    assert_eq!(
        st.skipped_too_long + st.skipped_invalid_utf8 + st.skipped_nul,
        0
    );
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_start_reads_existing_lines_and_default_starts_at_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..5));

    let (tx, mut rx) = mpsc::channel(64);
    let replay = source::spawn_with(files(&log, true), opts(), tx)
        .await
        .expect("spawn");
    assert_eq!(texts(&take(&mut rx, 5, 5).await), expect(0..5));

    let (tx2, mut rx2) = mpsc::channel(64);
    let tail = source::spawn_with(files(&log, false), opts(), tx2)
        .await
        .expect("spawn");
    quiet(&mut rx2, 400).await;
    append(&log, &lines(5..7));
    assert_eq!(texts(&take(&mut rx2, 2, 5).await), expect(5..7));
    assert_eq!(texts(&take(&mut rx, 2, 5).await), expect(5..7));
    quiet(&mut rx, 300).await;
    quiet(&mut rx2, 1).await;
    replay.join().await;
    tail.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_loses_and_repeats_nothing() {
    for glob_suffix in ["", "*"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        let old = dir.path().join("mail.log.1");
        append(&log, &lines(0..3));
        let glob = dir.path().join(format!("mail.log{glob_suffix}"));
        let (tx, mut rx) = mpsc::channel(1024);
        let h = source::spawn_with(files(&glob, false), opts(), tx)
            .await
            .expect("spawn");
        append(&log, &lines(3..100));
        // Rotate before the reader necessarily caught up; the writer keeps its old file
        // for a while (as syslog does until HUP), then reopens the name.
        std::fs::rename(&log, &old).expect("rename");
        append(&old, &lines(100..150));
        append(&log, &lines(150..300));
        let got = take(&mut rx, 297, 10).await;
        assert_eq!(texts(&got), expect(3..300), "glob mail.log{glob_suffix}");
        // Lines the writer adds to the old file after the switch still count.
        append(&old, &lines(300..301));
        append(&log, &lines(301..302));
        let got = take(&mut rx, 2, 5).await;
        let mut t = texts(&got);
        t.sort();
        let mut want = expect(300..302);
        want.sort();
        assert_eq!(t, want);
        quiet(&mut rx, 800).await;
        let st = h.stats();
        assert_eq!(st.lines, 299);
        if glob_suffix.is_empty() {
            // The renamed file stopped growing and was let go.
            assert_eq!(st.rotations, 1, "{st:?}");
        }
        h.join().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..2));
    let (tx, mut rx) = mpsc::channel(1024);
    let h = source::spawn_with(files(&log, false), opts(), tx)
        .await
        .expect("spawn");
    append(&log, &lines(2..200));
    assert_eq!(texts(&take(&mut rx, 198, 10).await), expect(2..200));
    // logrotate copytruncate: copy, then truncate in place; the writer keeps appending.
    std::fs::copy(&log, dir.path().join("mail.log.1")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append(&log, &lines(200..220));
    assert_eq!(texts(&take(&mut rx, 20, 10).await), expect(200..220));
    quiet(&mut rx, 600).await;
    assert_eq!(h.stats().truncations, 1);
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_with_matching_glob_resumes_the_copy_where_the_original_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    let copy = dir.path().join("mail.log.1");
    append(&log, &lines(0..2));
    let (tx, mut rx) = mpsc::channel(1024);
    let glob = dir.path().join("mail.log*");
    let h = source::spawn_with(files(&glob, false), opts(), tx)
        .await
        .expect("spawn");
    append(&log, &lines(2..100));
    assert_eq!(texts(&take(&mut rx, 98, 10).await), expect(2..100));
    // These may or may not be read from the original before it is copied and truncated:
    // either way each must arrive once (from the original or from the copy).
    append(&log, &lines(100..150));
    std::fs::copy(&log, &copy).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append(&log, &lines(150..160));
    let mut got = texts(&take(&mut rx, 60, 10).await);
    quiet(&mut rx, 800).await;
    got.sort();
    let mut want = expect(100..160);
    want.sort();
    assert_eq!(got, want);
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glob_follows_several_files_and_picks_up_new_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    append(&a, &lines(0..2));
    append(&dir.path().join("notes.txt"), "not a log\n");
    let (tx, mut rx) = mpsc::channel(64);
    let h = source::spawn_with(files(&dir.path().join("*.log"), false), opts(), tx)
        .await
        .expect("spawn");
    append(&a, &lines(2..4));
    let got = take(&mut rx, 2, 5).await;
    assert_eq!(texts(&got), expect(2..4));
    // A file created after the start is read from its beginning.
    append(&b, &lines(4..7));
    let got = take(&mut rx, 3, 5).await;
    assert_eq!(texts(&got), expect(4..7));
    assert!(
        got.iter()
            .all(|l| &*l.source == b.to_str().unwrap_or_default())
    );
    append(&dir.path().join("notes.txt"), "still not a log\n");
    append(&a, &lines(7..8));
    assert_eq!(texts(&take(&mut rx, 1, 5).await), expect(7..8));
    quiet(&mut rx, 400).await;
    assert_eq!(h.stats().files_opened, 2);
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_invalid_and_nul_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    std::fs::write(&log, b"").expect("create");
    let (tx, mut rx) = mpsc::channel(64);
    let h = source::spawn_with(files(&log, false), opts(), tx)
        .await
        .expect("spawn");
    append(&log, &lines(0..1));
    // 5 MB without a newline, written in pieces while the reader runs.
    let piece = "A".repeat(256 * 1024);
    for _ in 0..20 {
        append(&log, &piece);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    append(&log, "B\n");
    let mut bad = b"Nov 22 05:40:00 mx postfix/smtpd[1]: bad \xff\xfe utf8\n".to_vec();
    bad.extend_from_slice(b"Nov 22 05:40:00 mx postfix/smtpd[1]: a \0 nul\n");
    // Just over the limit (16 KiB by default).
    bad.extend_from_slice(&vec![b'x'; source::MAX_LINE + 1]);
    bad.push(b'\n');
    bad.extend_from_slice(&vec![b'y'; source::MAX_LINE]);
    bad.push(b'\n');
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bad))
        .expect("append");
    append(&log, &lines(1..2));
    let got = take(&mut rx, 3, 10).await;
    assert_eq!(got[0].text, postfix(0));
    assert_eq!(got[1].text, "y".repeat(source::MAX_LINE));
    assert_eq!(got[2].text, postfix(1));
    quiet(&mut rx, 300).await;
    let st = h.stats();
    assert_eq!(st.skipped_too_long, 2, "{st:?}");
    assert_eq!(st.skipped_invalid_utf8, 1, "{st:?}");
    assert_eq!(st.skipped_nul, 1, "{st:?}");
    assert_eq!(st.lines, 3);
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..10_000));
    let (tx, mut rx) = mpsc::channel(4);
    let h = source::spawn_batched(files(&log, true), opts(), tx)
        .await
        .expect("spawn");
    let mut all = Vec::new();
    while all.len() < 10_000 {
        let b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("timeout")
            .expect("closed");
        assert!(!b.is_empty());
        all.extend(b);
    }
    assert_eq!(texts(&all), expect(0..10_000));
    let t = std::time::Instant::now();
    h.join().await;
    assert!(t.elapsed() < Duration::from_secs(2));
    // After join the sender is gone: the channel reports closed.
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn bad_globs_are_errors() {
    let (tx, _rx) = mpsc::channel(1);
    let e = source::spawn(
        SourceSpec::Files {
            globs: vec!["/var/log/x[0-".into()],
            from_start: false,
        },
        tx.clone(),
    )
    .await
    .expect_err("bad glob");
    assert!(e.to_string().contains("x[0-"), "{e}");
    assert!(
        source::spawn(
            SourceSpec::Files {
                globs: vec![],
                from_start: false
            },
            tx
        )
        .await
        .is_err()
    );
}

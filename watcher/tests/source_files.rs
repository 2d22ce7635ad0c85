//! Tailed log files: appends, partial lines, rotation, copytruncate, globs, bad input.

mod source_util;

use std::sync::Arc;
use std::time::Duration;

use fail2xdp::source::{self, FilePosition, Position, SourceOptions, SourceSpec};
use source_util::*;

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
    let (h, mut rx) = start(files(&log, false), opts(), 64).await.expect("spawn");
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
        st.skipped_too_long + st.replaced_invalid_utf8 + st.replaced_nul,
        0
    );
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_start_reads_existing_lines_and_default_starts_at_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..5));

    let (replay, mut rx) = start(files(&log, true), opts(), 64).await.expect("spawn");
    assert_eq!(texts(&take(&mut rx, 5, 5).await), expect(0..5));

    let (tail, mut rx2) = start(files(&log, false), opts(), 64).await.expect("spawn");
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
        let (h, mut rx) = start(files(&glob, false), opts(), 1024)
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
    let (h, mut rx) = start(files(&log, false), opts(), 1024)
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
    let glob = dir.path().join("mail.log*");
    let (h, mut rx) = start(files(&glob, false), opts(), 1024)
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
    let (h, mut rx) = start(files(&dir.path().join("*.log"), false), opts(), 64)
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
async fn huge_lines_are_skipped_and_undecodable_ones_repaired_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    std::fs::write(&log, b"").expect("create");
    let (h, mut rx) = start(files(&log, false), opts(), 64).await.expect("spawn");
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
    let got = take(&mut rx, 5, 10).await;
    assert_eq!(
        texts(&got),
        [
            postfix(0),
            "Nov 22 05:40:00 mx postfix/smtpd[1]: bad \u{FFFD}\u{FFFD} utf8".to_string(),
            "Nov 22 05:40:00 mx postfix/smtpd[1]: a \u{FFFD} nul".to_string(),
            "y".repeat(source::MAX_LINE),
            postfix(1),
        ]
    );
    quiet(&mut rx, 300).await;
    let st = h.stats();
    assert_eq!(st.skipped_too_long, 2, "{st:?}");
    assert_eq!(st.replaced_invalid_utf8, 1, "{st:?}");
    assert_eq!(st.replaced_nul, 1, "{st:?}");
    assert_eq!(st.lines, 5);
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_streams_in_order_and_stops_promptly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..10_000));
    let (h, mut rx) = start(files(&log, true), opts(), 4).await.expect("spawn");
    let all = take(&mut rx, 10_000, 10).await;
    assert_eq!(texts(&all), expect(0..10_000));
    let t = std::time::Instant::now();
    h.join().await;
    assert!(t.elapsed() < Duration::from_secs(2));
    // After join the sender is gone: the channel reports closed.
    assert!(rx.recv().await.is_none());
}

/// A file's chunks carry its modification time as it was when they were
/// read: a replay dates yearless stamps from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_carry_the_files_modification_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..10));
    // 2021-01-05T10:00:00Z
    let secs = 1_609_840_800;
    std::fs::File::options()
        .append(true)
        .open(&log)
        .and_then(|f| f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs)))
        .expect("set mtime");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let deliver: source::Deliver =
        Box::new(move |c: source::Chunk| tx.send((c.lines().count(), c.modified())).is_ok());
    let h = source::spawn(files(&log, true), opts(), deliver)
        .await
        .expect("spawn");
    let want = jiff::Timestamp::from_second(secs as i64).ok();
    let mut n = 0;
    while n < 10 {
        let (k, m) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("lines in time")
            .expect("a chunk");
        assert_eq!(m, want);
        n += k;
    }
    h.join().await;
}

#[tokio::test]
async fn bad_globs_are_errors() {
    let e = start(
        SourceSpec::Files {
            globs: vec!["/var/log/x[0-".into()],
            from_start: false,
        },
        opts(),
        1,
    )
    .await
    .expect_err("bad glob");
    assert!(e.to_string().contains("x[0-"), "{e}");
    assert!(
        start(
            SourceSpec::Files {
                globs: vec![],
                from_start: false
            },
            opts(),
            1,
        )
        .await
        .is_err()
    );
}

fn saving(saved: &Arc<MemPositions>) -> SourceOptions {
    SourceOptions {
        positions: Some(saved.clone()),
        ..opts()
    }
}

/// The saved position of the only file, once it is at `offset`.
async fn saved_offset(saved: &MemPositions, offset: u64) -> FilePosition {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(Position::Files(f)) = saved.get()
            && let [p] = f.as_slice()
            && p.offset == offset
        {
            return p.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "position not saved at {offset}: {:?}",
            saved.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).expect("stat").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_goes_on_where_the_last_run_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..3));
    let saved = Arc::new(MemPositions::default());
    // No saved position yet: the end, as always.
    let (h, mut rx) = start(files(&log, false), saving(&saved), 64)
        .await
        .expect("spawn");
    append(&log, &lines(3..10));
    assert_eq!(texts(&take(&mut rx, 7, 5).await), expect(3..10));
    // Saved while running (a kill -9 loses at most the last half second or so).
    let p = saved_offset(&saved, len(&log)).await;
    assert_eq!(
        std::fs::read(&log).expect("read")[..p.fingerprint.len()],
        p.fingerprint
    );
    h.join().await;

    append(&log, &lines(10..20));
    let (h, mut rx) = start(files(&log, false), saving(&saved), 64)
        .await
        .expect("spawn");
    assert_eq!(texts(&take(&mut rx, 10, 5).await), expect(10..20));
    quiet(&mut rx, 300).await;
    h.join().await;

    // --from-end: the saved position is not used, but still kept up to date.
    append(&log, &lines(20..25));
    let from_end = SourceOptions {
        resume: false,
        ..saving(&saved)
    };
    let (h, mut rx) = start(files(&log, false), from_end, 64)
        .await
        .expect("spawn");
    quiet(&mut rx, 300).await;
    append(&log, &lines(25..26));
    assert_eq!(texts(&take(&mut rx, 1, 5).await), expect(25..26));
    h.join().await;
    saved_offset(&saved, len(&log)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saved_position_never_runs_ahead_of_what_the_consumer_finished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    std::fs::write(&log, "").expect("create");
    let saved = Arc::new(MemPositions::default());
    // Chunks are kept, not done with, until the test drops them.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let h = source::spawn(
        files(&log, false),
        saving(&saved),
        Box::new(move |c| tx.blocking_send(c).is_ok()),
    )
    .await
    .expect("spawn");
    saved_offset(&saved, 0).await;
    append(&log, &lines(0..50));
    let held = hold(&mut rx, 50).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    saved_offset(&saved, 0).await;
    drop(held);
    saved_offset(&saved, len(&log)).await;
    // What is still queued when the source stops is not done with: it is read again.
    let before = len(&log);
    append(&log, &lines(50..60));
    let queued = hold(&mut rx, 10).await;
    h.stop();
    drop(queued);
    drop(rx);
    h.join().await;
    saved_offset(&saved, before).await;
}

/// Chunks received until they hold `n` lines, kept (not done with).
async fn hold(rx: &mut tokio::sync::mpsc::Receiver<source::Chunk>, n: usize) -> Vec<source::Chunk> {
    let mut held = Vec::new();
    while held.iter().map(source::Chunk::len).sum::<usize>() < n {
        held.push(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("timeout")
                .expect("chunk"),
        );
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_the_rest_of_a_file_rotated_meanwhile_then_the_new_one() {
    for glob_suffix in ["", "*"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        let glob = dir.path().join(format!("mail.log{glob_suffix}"));
        append(&log, &lines(0..3));
        let saved = Arc::new(MemPositions::default());
        let (h, mut rx) = start(files(&glob, true), saving(&saved), 64)
            .await
            .expect("spawn");
        assert_eq!(texts(&take(&mut rx, 3, 5).await), expect(0..3));
        h.join().await;

        // While down: more lines, a rotation by rename, lines in the new file.
        append(&log, &lines(3..10));
        std::fs::rename(&log, dir.path().join("mail.log.1")).expect("rename");
        append(&log, &lines(10..20));
        let (h, mut rx) = start(files(&glob, false), saving(&saved), 64)
            .await
            .expect("spawn");
        assert_eq!(
            texts(&take(&mut rx, 17, 5).await),
            expect(3..20),
            "glob mail.log{glob_suffix}"
        );
        quiet(&mut rx, 300).await;
        append(&log, &lines(20..21));
        assert_eq!(texts(&take(&mut rx, 1, 5).await), expect(20..21));
        h.join().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_copytruncate_reads_the_copy_from_the_saved_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..3));
    let saved = Arc::new(MemPositions::default());
    let glob = dir.path().join("mail.log*");
    let (h, mut rx) = start(files(&glob, true), saving(&saved), 64)
        .await
        .expect("spawn");
    assert_eq!(texts(&take(&mut rx, 3, 5).await), expect(0..3));
    h.join().await;

    append(&log, &lines(3..10));
    std::fs::copy(&log, dir.path().join("mail.log.1")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append(&log, &lines(10..20));
    let (h, mut rx) = start(files(&glob, false), saving(&saved), 64)
        .await
        .expect("spawn");
    let mut got = texts(&take(&mut rx, 17, 5).await);
    quiet(&mut rx, 500).await;
    got.sort();
    let mut want = expect(3..20);
    want.sort();
    assert_eq!(got, want);
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_meanwhile_is_read_from_its_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..3));
    let saved = Arc::new(MemPositions::default());
    let (h, mut rx) = start(files(&log, true), saving(&saved), 64)
        .await
        .expect("spawn");
    assert_eq!(texts(&take(&mut rx, 3, 5).await), expect(0..3));
    h.join().await;
    // Same inode, other first bytes, longer than the saved offset.
    std::fs::write(&log, lines(100..110)).expect("rewrite");
    let (h, mut rx) = start(files(&log, false), saving(&saved), 64)
        .await
        .expect("spawn");
    assert_eq!(texts(&take(&mut rx, 10, 5).await), expect(100..110));
    quiet(&mut rx, 300).await;
    h.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_cut_at_the_first_start_stays_skipped_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, &lines(0..2));
    append(&log, "Nov 22 05:39:59 mx postfix/smtpd[9]: half a li");
    let saved = Arc::new(MemPositions::default());
    let (h, mut rx) = start(files(&log, false), saving(&saved), 64)
        .await
        .expect("spawn");
    quiet(&mut rx, 300).await;
    h.join().await;
    let p = saved_offset(&saved, len(&log)).await;
    assert!(p.mid_line, "{p:?}");
    append(&log, "ne\n");
    append(&log, &lines(2..4));
    let (h, mut rx) = start(files(&log, false), saving(&saved), 64)
        .await
        .expect("spawn");
    assert_eq!(texts(&take(&mut rx, 2, 5).await), expect(2..4));
    quiet(&mut rx, 300).await;
    h.join().await;
    assert!(!saved_offset(&saved, len(&log)).await.mid_line);
}

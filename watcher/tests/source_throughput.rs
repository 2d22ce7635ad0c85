//! Raw replay rate of the file source (no filters): `FAIL2XDP_BENCH_LOG=/path/to/1M.log
//! cargo test --release -p fail2xdp --test source_throughput -- --ignored --nocapture`.
//! Without the variable it replays a generated 200,000-line file.

mod source_util;

use std::time::Instant;

use fail2xdp::source::{self, SourceSpec};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore = "benchmark; run with --release"]
async fn replay_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = match std::env::var_os("FAIL2XDP_BENCH_LOG") {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let p = dir.path().join("mail.log");
            std::fs::write(&p, source_util::lines(0..200_000)).expect("write");
            p
        }
    };
    let want = std::fs::read(&path)
        .expect("read")
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    let spec = SourceSpec::Files {
        globs: vec![path.display().to_string()],
        from_start: true,
    };
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    let (tx, mut rx) = mpsc::channel(8);
    let h = source::spawn(
        spec,
        source_util::opts(),
        Box::new(move |c| tx.blocking_send(c).is_ok()),
    )
    .await
    .expect("spawn");
    let (mut n, mut bytes) = (0u64, 0u64);
    while n < want {
        let c = rx.recv().await.expect("closed early");
        n += c.len() as u64;
        bytes += (c.text().len() - c.len()) as u64;
    }
    h.join().await;
    let s = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{n} lines ({} MB) in {s:.3}s: {:.0} lines/s wall, {:.0} lines per CPU-second, reader + consumer",
        bytes / 1_000_000,
        n as f64 / s,
        n as f64 / cpu,
    );
    assert_eq!(n, want);
}

/// User + system CPU time of this process (all threads), so the rate is meaningful on a
/// loaded machine too.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

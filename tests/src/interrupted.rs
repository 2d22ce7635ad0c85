//! Blocking socket calls that a signal can interrupt.
//!
//! A read on a socket with a receive timeout (SO_RCVTIMEO) is one of the
//! calls Linux never restarts: it fails with EINTR when the process is
//! stopped and continued, frozen by its cgroup, or handed any signal that
//! has a handler, SA_RESTART or not (signal(7)). std returns that error as it is, and CI
//! once failed on it while waiting for the agent's systemd notification.
//! `BufRead::read_line` and `Read::read_to_string` retry by themselves; a
//! bare `recv` or `read` does not.

use std::io;

/// `call` again for as long as it was interrupted by a signal.
pub fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        os::unix::{net::UnixDatagram, thread::JoinHandleExt},
        thread,
        time::{Duration, Instant},
    };

    use super::*;

    extern "C" fn nothing(_: libc::c_int) {}

    /// Signals `thread` (SIGUSR2, handled by doing nothing) every 10 ms
    /// until it finishes or `for_` has passed.
    fn pester<T>(thread: &thread::JoinHandle<T>, for_: Duration) {
        let end = Instant::now() + for_;
        while !thread.is_finished() && Instant::now() < end {
            // SAFETY: the thread is alive (not joined); SIGUSR2 has a handler.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), libc::SIGUSR2) };
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A bare recv on a socket with a timeout fails with EINTR when a
    /// signal is handled meanwhile (what CI saw); `retry` gets the datagram
    /// sent after a dozen such signals.
    #[test]
    fn a_handled_signal_does_not_end_a_timed_receive() {
        // SAFETY: a handler that does nothing, for a signal nothing else
        // in this test binary uses; SA_RESTART as most handlers set it.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        }
        let (tx, rx) = UnixDatagram::pair().unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let rx = std::sync::Arc::new(rx);

        let bare = {
            let rx = rx.clone();
            thread::spawn(move || rx.recv(&mut [0u8; 64]).map_err(|e| e.kind()))
        };
        pester(&bare, Duration::from_secs(5));
        assert_eq!(bare.join().unwrap(), Err(io::ErrorKind::Interrupted));

        let retried = {
            let rx = rx.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                retry(|| rx.recv(&mut buf)).map(|n| buf[..n].to_vec())
            })
        };
        pester(&retried, Duration::from_millis(120));
        tx.send(b"READY=1").unwrap();
        assert_eq!(retried.join().unwrap().unwrap(), b"READY=1");
    }
}

//! The XDP program's own log records (aya-log): the first drop of each ban
//! and rate-limited parse anomalies, forwarded to the agent's log under the
//! target `fail2xdp::xdp`. Only the agent reads them; the ring buffer is
//! created with each load (never pinned) and taken here before the
//! capability drop: reading it needs no capability.
use std::os::fd::AsRawFd as _;

use aya_log::EbpfLogger;
use log::warn;
use tokio::io::{Interest, unix::AsyncFd};

use super::Enforcer;

/// The most verbose level of the program's records that the process's
/// logger keeps, as aya-log numbers them (error 1 .. trace 5; 0: none),
/// for the program's `AYA_LOG_LEVEL`.
pub(super) fn level() -> u8 {
    use log::Level;
    [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ]
    .into_iter()
    .find(|&l| {
        l <= log::max_level()
            && log::logger().enabled(
                &log::Metadata::builder()
                    .level(l)
                    .target(fail2xdp_common::XDP_LOG_TARGET)
                    .build(),
            )
    })
    .map_or(0, |l| l as u8)
}

/// A reader of one loaded program's log ring buffer.
pub struct KernelLog(EbpfLogger<&'static dyn log::Log>);

impl std::fmt::Debug for KernelLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KernelLog")
            .field(&self.0.as_raw_fd())
            .finish()
    }
}

/// The reader of `ebpf`'s log records, or `None` (with a warning) when the
/// object has none: the program runs the same either way.
pub(super) fn take(ebpf: &mut aya::Ebpf, what: &str) -> Option<KernelLog> {
    match EbpfLogger::init(ebpf) {
        Ok(l) => Some(KernelLog(l)),
        Err(e) => {
            warn!(
                "the XDP program's log records ({what}) cannot be read: {}",
                crate::error_chain(&e)
            );
            None
        }
    }
}

impl Enforcer {
    /// The readers of the log records of the program loaded here and of the
    /// copies attached since as extensions of libxdp's dispatcher; taken
    /// once, by the agent, after attaching and before dropping capabilities.
    pub fn take_kernel_logs(&mut self) -> Vec<KernelLog> {
        let mut logs = std::mem::take(&mut self.kernel_logs);
        if let Some(ebpf) = self.ebpf.as_mut()
            && let Some(l) = take(ebpf, "loaded program")
        {
            logs.push(l);
        }
        logs
    }
}

impl KernelLog {
    /// Forwards the records as they arrive, until the runtime stops; needs
    /// a tokio runtime with I/O enabled.
    pub fn spawn(self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        // SAFETY: the logger owns the ring buffer's fd, which stays open and
        // the same for as long as the AsyncFd owns the logger.
        let mut fd = unsafe { AsyncFd::register_with_interest(self.0, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(tokio::spawn(async move {
            loop {
                let mut ready = match fd.readable_mut().await {
                    Ok(r) => r,
                    Err(e) => {
                        warn!("reading the XDP program's log records: {e}");
                        return;
                    }
                };
                ready.get_inner_mut().flush();
                ready.clear_ready();
            }
        }))
    }
}

//! The helper process (`fail2xdp closer-helper`, started by the agent
//! before it drops its capabilities): keeps CAP_NET_ADMIN only, reads
//! targets from stdin and answers on stdout, one line each way. It exits
//! when stdin closes or the agent dies.
//!
//! In: `NET PORTS` (`PORTS` is `-` for every port, else `25,587`).
//! Out: `closed N NET` for each target that closed N > 0 connections, then
//! `done`; or `error TEXT` when a batch could not be closed.
use std::io::{self, BufRead as _, BufReader, Write as _};

use super::diag::{Diag, Target};
use crate::addr::PortSet;

/// The line the agent writes for a target.
pub fn encode(t: &Target) -> String {
    let ports = if t.ports.is_all() {
        "-".to_string()
    } else {
        t.ports
            .0
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("{} {ports}\n", t.net)
}

/// A line read back; None for a line the agent could not have written.
pub fn decode(line: &str) -> Option<Target> {
    let (net, ports) = line.trim_end().split_once(' ')?;
    let ports = if ports == "-" {
        PortSet::all()
    } else {
        PortSet(
            ports
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        )
    };
    Some(Target {
        net: net.parse().ok()?,
        ports,
    })
}

pub fn main() -> anyhow::Result<()> {
    // The agent gone, this process has nothing to do.
    // SAFETY: integers only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    // A Ctrl-C or a stop signal meant for the agent's group: the helper
    // ends when the agent closes its stdin, not before it.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: SIG_IGN is always a valid disposition.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    crate::privs::drop_to(&[crate::privs::CAP_NET_ADMIN])?;
    // A blocklist of a million lines arrives in pipe-sized pieces: a large
    // buffer and `more_waiting` keep it one batch, one socket dump.
    let mut input = BufReader::with_capacity(1 << 20, io::stdin().lock());
    let mut out = io::stdout().lock();
    let mut line = String::new();
    loop {
        // A burst of bans is one dump: every line already sent is taken.
        let mut batch = Vec::new();
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                if batch.is_empty() {
                    return Ok(());
                }
                break;
            }
            batch.extend(decode(&line));
            if input.buffer().is_empty() && !more_waiting() {
                break;
            }
        }
        if batch.is_empty() {
            continue;
        }
        // A socket per batch: cheap, and nothing stale between bursts.
        let result = Diag::open().and_then(|d| d.close(&batch));
        match result {
            Ok(closed) => {
                for (t, n) in batch.iter().zip(closed) {
                    if n > 0 {
                        writeln!(out, "closed {n} {}", t.net)?;
                    }
                }
                writeln!(out, "done")?;
            }
            Err(e) => writeln!(out, "error {}", why(&e))?,
        }
        out.flush()?;
    }
}

/// Whether stdin has more to read right now (the agent is still writing
/// the burst this batch belongs to).
fn more_waiting() -> bool {
    let mut fds = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let n = unsafe { libc::poll(&mut fds, 1, 0) };
    n > 0 && fds.revents & libc::POLLIN != 0
}

/// What a sock_diag failure means for an admin.
fn why(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("{e} (closing connections needs CAP_NET_ADMIN)")
        }
        Some(libc::EOPNOTSUPP) => {
            format!("{e} (the kernel lacks CONFIG_INET_DIAG_DESTROY)")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_cross_the_pipe_unchanged() {
        for (net, ports) in [("192.0.2.7/32", vec![]), ("2001:db8::/64", vec![25, 587])] {
            let t = Target {
                net: net.parse().unwrap(),
                ports: PortSet(ports),
            };
            assert_eq!(decode(&encode(&t)), Some(t));
        }
        assert_eq!(decode("192.0.2.7/32"), None);
        assert_eq!(decode("nonsense -"), None);
        assert_eq!(decode("192.0.2.7/32 25,x"), None);
    }
}

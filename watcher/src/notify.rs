//! systemd's readiness protocol (sd_notify(3)): one datagram of
//! `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET` (a path,
//! or `@name` for an abstract socket). Without `$NOTIFY_SOCKET` (not
//! started by systemd with `Type=notify`) nothing is sent.
use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    path::Path,
};

#[derive(Debug, thiserror::Error)]
#[error("telling systemd {state:?} through NOTIFY_SOCKET={socket}")]
pub struct NotifyError {
    state: String,
    socket: String,
    #[source]
    source: io::Error,
}

/// Sends `state` (e.g. `READY=1\nSTATUS=...`) to systemd; `Ok(false)` when
/// no notify socket is set.
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var_os("NOTIFY_SOCKET") {
        None => Ok(false),
        Some(s) if s.is_empty() => Ok(false),
        Some(s) => {
            let socket = s.to_string_lossy().into_owned();
            send(&socket, state)
                .map(|()| true)
                .map_err(|source| NotifyError {
                    state: state.to_owned(),
                    socket,
                    source,
                })
        }
    }
}

fn send(socket: &str, state: &str) -> io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None if socket.starts_with('/') => SocketAddr::from_pathname(Path::new(socket))?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract @name",
            ));
        }
    };
    let sock = UnixDatagram::unbound()?;
    let n = sock.send_to_addr(state.as_bytes(), &addr)?;
    if n != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "datagram cut short",
        ));
    }
    Ok(())
}

/// `READY=1` with a status line and this process as the main pid.
pub fn ready(status: &str) -> Result<bool, NotifyError> {
    notify(&format!(
        "READY=1\nSTATUS={}\nMAINPID={}",
        one_line(status),
        std::process::id()
    ))
}

/// `RELOADING=1` (then [`ready`] once the new configuration runs).
pub fn reloading() -> Result<bool, NotifyError> {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
}

pub fn stopping() -> Result<bool, NotifyError> {
    notify("STOPPING=1")
}

pub fn status(status: &str) -> Result<bool, NotifyError> {
    notify(&format!("STATUS={}", one_line(status)))
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // A timed receive is never restarted after a signal (signal(7)).
        let n = loop {
            match sock.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => break r.unwrap(),
            }
        };
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Both address forms systemd uses, against sockets the test owns.
    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let s = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1\nSTATUS=ok").unwrap();
        assert_eq!(recv(&s), "READY=1\nSTATUS=ok");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("fail2xdp-test-{}", std::process::id());
        let a = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        assert_eq!(recv(&a), "STOPPING=1");

        assert!(send("relative/path", "READY=1").is_err());
        assert!(send(dir.path().join("none").to_str().unwrap(), "READY=1").is_err());
    }
}

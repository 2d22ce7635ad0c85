//! Connections to Postfix's ports as the kernel of the calling thread's
//! namespace lists them (/proc/thread-self/net/tcp{,6}): what smtpd is
//! still busy with.
use std::{fs, net::IpAddr};

use anyhow::{Context, Result};

/// Connections to ports 25/587 from `from` in this thread's namespace, in
/// ESTABLISHED or CLOSE_WAIT (smtpd has not let go of them yet).
pub fn open_connections(from: &[IpAddr]) -> Result<usize> {
    let mut n = 0;
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let text = fs::read_to_string(format!("/proc/thread-self/net/{file}"))
            .with_context(|| format!("reading /proc/thread-self/net/{file}"))?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state)) = (f.get(1), f.get(2), f.get(3)) else {
                continue;
            };
            if !matches!(*state, "01" | "08") {
                continue;
            }
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if !matches!(port, Some(25 | 587)) {
                continue;
            }
            if let Some(ip) = remote.split_once(':').and_then(|(a, _)| proc_ip(a, v6))
                && from.contains(&ip)
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// An address as /proc/net/tcp{,6} prints it: 32-bit words in host order.
fn proc_ip(hex: &str, v6: bool) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match (v6, bytes.len()) {
        (false, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        (true, 16) => {
            let ip = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4))
        }
        _ => None,
    }
}

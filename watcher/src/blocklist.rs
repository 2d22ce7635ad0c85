//! The lines of a blocklist (`fail2xdp ban --file`): one address or CIDR a
//! line, `#` comments and blank lines allowed. Reading is bounded: a line is
//! read up to [`MAX_LINE`] bytes and the rest of it skipped, so any input
//! costs memory for its networks only.
use std::{
    fmt,
    io::{self, BufRead, Read},
};

use crate::addr::{IpNet, parse_net};

/// Longest line read; anything longer is not an address.
pub const MAX_LINE: usize = 512;

/// A line that is not an address, and why (it is skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadLine {
    TooLong,
    NotUtf8,
    /// Not an address or network: the parser's message.
    Invalid(String),
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadLine::TooLong => f.write_str("line too long"),
            BadLine::NotUtf8 => f.write_str("not UTF-8"),
            BadLine::Invalid(m) => f.write_str(m),
        }
    }
}

/// What a blocklist held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct List {
    /// The networks, each with its line number (from 1).
    pub nets: Vec<(IpNet, usize)>,
    /// Lines skipped as bad.
    pub bad: usize,
}

/// Reads every line of `r`; `on_bad` hears of each bad line (its number
/// and why) as it is met. Only a read error stops the reading.
pub fn read<R: BufRead>(
    mut r: R,
    mut on_bad: impl FnMut(usize, &BadLine) -> io::Result<()>,
) -> io::Result<List> {
    let mut list = List::default();
    let mut lineno = 0usize;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let bad = if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            // The rest of the line, without keeping it.
            skip_line(&mut r)?;
            Some(BadLine::TooLong)
        } else {
            match std::str::from_utf8(&buf) {
                Err(_) => Some(BadLine::NotUtf8),
                Ok(line) => {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    match parse_net(line) {
                        Ok(net) => {
                            list.nets.push((net, lineno));
                            None
                        }
                        Err(e) => Some(BadLine::Invalid(e.to_string())),
                    }
                }
            }
        };
        if let Some(b) = bad {
            list.bad += 1;
            on_bad(lineno, &b)?;
        }
    }
    Ok(list)
}

/// Consumes `r` up to and including the next newline (or its end).
fn skip_line<R: BufRead>(r: &mut R) -> io::Result<()> {
    loop {
        let (done, used) = {
            let buf = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(());
            }
            match memchr::memchr(b'\n', buf) {
                Some(i) => (true, i + 1),
                None => (false, buf.len()),
            }
        };
        r.consume(used);
        if done {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &[u8]) -> (List, Vec<(usize, BadLine)>) {
        let mut bad = Vec::new();
        let list = read(text, |n, b| {
            bad.push((n, b.clone()));
            Ok(())
        })
        .expect("in memory");
        (list, bad)
    }

    #[test]
    fn networks_comments_and_bad_lines_by_number() {
        let long = format!("192.0.2.1{}\n", " ".repeat(MAX_LINE));
        let text =
            format!("# a list\n192.0.2.1\n\n  198.51.100.0/24  # a comment\nnonsense\n{long}");
        let bytes = [text.as_bytes(), b"\xff\n2001:db8::/48"].concat();
        let (list, bad) = read_all(&bytes);
        let nets: Vec<(String, usize)> =
            list.nets.iter().map(|(n, l)| (n.to_string(), *l)).collect();
        assert_eq!(
            nets,
            [
                ("192.0.2.1/32".to_string(), 2),
                ("198.51.100.0/24".into(), 4),
                ("2001:db8::/48".into(), 8)
            ]
        );
        assert_eq!(list.bad, 3);
        assert_eq!(
            bad.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [5, 6, 7],
            "{bad:?}"
        );
        assert_eq!(bad[1].1, BadLine::TooLong);
        assert_eq!(bad[2].1, BadLine::NotUtf8);
    }

    /// A line far longer than the limit costs no memory and does not hide
    /// the next line.
    #[test]
    fn a_huge_line_is_skipped_whole() {
        let mut text = vec![b'1'; 10 * MAX_LINE];
        text.extend_from_slice(b"\n192.0.2.9\n");
        let (list, bad) = read_all(&text);
        assert_eq!(list.nets.len(), 1);
        assert_eq!(list.nets[0].1, 2);
        assert_eq!(bad, [(1, BadLine::TooLong)]);
    }
}

//! `ban --file` lines: the blocklist reader on bytes read in pieces of
//! every size.
use std::io::{BufReader, Read};

use crate::{
    addr::parse_net,
    blocklist::{self, BadLine, MAX_LINE},
};

/// Hands out its bytes at most `step` at a time, as a pipe may.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Input: one byte of read size, then the file.
pub fn ban_file(data: &[u8]) {
    let Some((&knob, file)) = data.split_first() else {
        return;
    };
    let mut bad = Vec::new();
    let list = blocklist::read(file, |n, why| {
        bad.push((n, why.clone()));
        Ok(())
    })
    .expect("reading memory");
    // Read in small pieces through a small buffer: the same answer.
    let step = 1 + usize::from(knob);
    let small = BufReader::with_capacity(1 + usize::from(knob) % 64, Trickle { data: file, step });
    let mut bad2 = Vec::new();
    let list2 = blocklist::read(small, |n, why| {
        bad2.push((n, why.clone()));
        Ok(())
    })
    .expect("reading memory");
    assert_eq!(list, list2, "the networks depend on the reads");
    assert_eq!(bad, bad2, "the bad lines depend on the reads");
    assert_eq!(list.bad, bad.len());

    let lines: Vec<&[u8]> = file.split(|&b| b == b'\n').collect();
    let mut last = 0;
    for (net, n) in &list.nets {
        assert!(*n > last, "line numbers go up");
        last = *n;
        let line = lines.get(n - 1).expect("a line of the file");
        assert!(
            line.len() <= MAX_LINE + 1,
            "line {n} is too long to be read"
        );
        let text = std::str::from_utf8(line).expect("a UTF-8 line");
        let text = text.split('#').next().unwrap_or("").trim();
        assert_eq!(parse_net(text).ok(), Some(*net), "line {n}: {text:?}");
    }
    for (n, why) in &bad {
        let line = lines.get(n - 1).expect("a line of the file");
        if *why != BadLine::TooLong {
            assert!(
                line.len() <= MAX_LINE + 1,
                "line {n} ({why}) is too long to be read"
            );
        }
    }
}

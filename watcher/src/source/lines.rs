//! Splitting a byte stream into bounded lines, and the checks every line passes.
//!
//! Input arrives in arbitrary chunks; the splitter keeps at most `max` bytes of an
//! unfinished line. Once a line exceeds `max` the rest of it is discarded as it arrives, so
//! a multi-megabyte line costs no more memory than a normal one.

use std::borrow::Cow;

use super::Counters;

/// A line longer than the limit: skipped (and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

impl TooLong {
    pub(super) fn count(self, stats: &Counters) {
        Counters::add(&stats.too_long, 1);
    }
}

/// What [`decode_line`] replaced in a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Bytes that are not UTF-8.
    pub invalid_utf8: bool,
    /// NUL bytes.
    pub nul: bool,
}

impl Repairs {
    pub(super) fn count(self, stats: &Counters) {
        Counters::add(&stats.invalid_utf8, u64::from(self.invalid_utf8));
        Counters::add(&stats.nul, u64::from(self.nul));
    }
}

/// The text of a complete line (without its newline), as a source delivers it: a
/// trailing `\r` dropped; bytes that are not UTF-8 and NUL bytes each replaced by
/// U+FFFD, except a run of NULs at the line's start (the padding a crash leaves in a
/// log file), which is dropped. `Err` for a line over `max` bytes; an empty text is
/// nothing to deliver.
///
/// Replacing keeps the line's shape: U+FFFD is not a bracket, a colon, a space or a
/// newline, and no byte sequence decodes to one (overlong forms of `]` or `\n` become
/// U+FFFD too), so bytes an attacker chose cannot turn into text that names another
/// host, and the failure around them still matches.
pub fn decode_line(line: &[u8], max: usize) -> Result<(Cow<'_, str>, Repairs), TooLong> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max {
        return Err(TooLong);
    }
    let start = line.iter().position(|&b| b != 0).unwrap_or(line.len());
    let body = &line[start..];
    let mut fix = Repairs {
        invalid_utf8: false,
        nul: start > 0 || memchr::memchr(0, body).is_some(),
    };
    let text = match std::str::from_utf8(body) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            fix.invalid_utf8 = true;
            String::from_utf8_lossy(body)
        }
    };
    let text = if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        text
    };
    Ok((text, fix))
}

/// Hands a complete line from [`Splitter`] on: decoded, repairs and skips counted.
pub(super) fn deliver_line(line: &[u8], max: usize, stats: &Counters, mut push: impl FnMut(&str)) {
    match decode_line(line, max) {
        Ok((text, fix)) => {
            fix.count(stats);
            if !text.is_empty() {
                push(&text);
            }
        }
        Err(t) => t.count(stats),
    }
}

/// One read of a file, split into lines that go to `out` as the file reader
/// delivers them: checked, repaired, blocks of plain lines at once; skips counted.
pub(super) fn feed_read(
    split: &mut Splitter,
    read: &[u8],
    max: usize,
    source: &std::sync::Arc<str>,
    out: &mut super::Outbox,
    stats: &Counters,
) {
    split.feed_blocks(read, max, |p| match p {
        Piece::Line(l) => deliver_line(l, max, stats, |text| out.push_str(source, text, stats)),
        Piece::Block(text, lines) => out.push_block(source, text, lines, stats),
        Piece::TooLong => TooLong.count(stats),
    });
}

/// Complete lines (`body` ends with `\n`) that all pass [`decode_line`]
/// unchanged: the text and the number of lines. Each check is one pass over the whole
/// block (no work per line); a block with anything unusual anywhere (a NUL, a
/// `\r`, an empty or overlong line, invalid UTF-8) goes line by line instead,
/// where each line gets its own verdict.
fn check_block(body: &[u8], max: usize) -> Option<(&str, usize)> {
    if memchr::memchr2(0, b'\r', body).is_some()
        || body.first() == Some(&b'\n')
        || memchr::memmem::find(body, b"\n\n").is_some()
        || !lines_within(body, max)
    {
        return None;
    }
    let text = if body.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        unsafe { std::str::from_utf8_unchecked(body) }
    } else {
        std::str::from_utf8(body).ok()?
    };
    Some((text, memchr::memchr_iter(b'\n', body).count()))
}

/// Whether every line of `body` (ending with `\n`) is at most `max` bytes:
/// each line's newline lies within `max + 1` bytes of its start, so it is
/// enough to hop from the last newline in reach to the next, about
/// `body.len() / max` steps.
fn lines_within(body: &[u8], max: usize) -> bool {
    let mut start = 0;
    while body.len() - start > max.saturating_add(1) {
        match memchr::memrchr(b'\n', &body[start..=start + max]) {
            Some(i) => start += i + 1,
            None => return false,
        }
    }
    true
}

/// Carries the unfinished tail of a stream between chunks.
#[derive(Debug, Default)]
pub(crate) struct Splitter {
    /// Start of a line whose newline has not arrived yet (never longer than `max + 1`).
    pending: Vec<u8>,
    /// The current line already exceeded `max`; drop bytes up to the next newline.
    discarding: bool,
    /// Reading started in the middle of a line: drop bytes up to the next newline, uncounted.
    resync: bool,
}

/// One element produced by [`Splitter::feed`].
pub(crate) enum Piece<'a> {
    Line(&'a [u8]),
    /// Several complete lines that all pass [`decode_line`] unchanged, each ending with
    /// `\n` (from [`Splitter::feed_blocks`] only), and how many.
    Block(&'a str, usize),
    /// A line longer than the limit ended (it was not kept).
    TooLong,
}

impl Splitter {
    /// Split `chunk`, calling `f` for every line it completes, in order. Bytes after the last
    /// newline are kept for the next call (or discarded if the line is already too long).
    pub(crate) fn feed(&mut self, chunk: &[u8], max: usize, mut f: impl FnMut(Piece<'_>)) {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            let seg = &chunk[start..nl];
            start = nl + 1;
            if self.resync {
                self.resync = false;
                self.pending.clear();
            } else if self.discarding {
                self.discarding = false;
                f(Piece::TooLong);
            } else if !self.pending.is_empty() {
                // +1 leaves room for a trailing '\r' that decode_line() strips.
                if self.pending.len() + seg.len() > max + 1 {
                    self.pending.clear();
                    f(Piece::TooLong);
                } else {
                    self.pending.extend_from_slice(seg);
                    let line = std::mem::take(&mut self.pending);
                    f(Piece::Line(&line));
                    // Keep the allocation for the next partial line.
                    self.pending = line;
                    self.pending.clear();
                }
            } else {
                f(Piece::Line(seg));
            }
        }
        let rest = &chunk[start..];
        if self.discarding || self.resync || rest.is_empty() {
            return;
        }
        if self.pending.len() + rest.len() > max + 1 {
            self.pending.clear();
            self.pending.shrink_to(max + 1);
            self.discarding = true;
        } else {
            self.pending.extend_from_slice(rest);
        }
    }

    /// Like [`feed`](Self::feed), but the complete lines in the middle of
    /// the chunk are checked all at once and, when every one passes (no NUL,
    /// UTF-8, not empty, no `\r`, at most `max` bytes: any normal log),
    /// handed over as one [`Piece::Block`]. Otherwise they go line by line.
    pub(crate) fn feed_blocks(&mut self, chunk: &[u8], max: usize, mut f: impl FnMut(Piece<'_>)) {
        let (Some(first), Some(last)) =
            (memchr::memchr(b'\n', chunk), memchr::memrchr(b'\n', chunk))
        else {
            return self.feed(chunk, max, f);
        };
        // Up to the first newline: the end of a line started earlier.
        self.feed(&chunk[..=first], max, &mut f);
        let body = &chunk[first + 1..=last];
        if !body.is_empty() {
            match check_block(body, max) {
                Some((text, n)) => f(Piece::Block(text, n)),
                None => self.feed(body, max, &mut f),
            }
        }
        self.feed(&chunk[last + 1..], max, f);
    }

    /// Forget an unfinished line (the file was truncated under it).
    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        self.discarding = false;
        self.resync = false;
    }

    /// The stream starts in the middle of a line: ignore everything up to the first newline.
    pub(crate) fn start_mid_line(&mut self) {
        self.reset();
        self.resync = true;
    }

    /// Bytes of an unfinished line held back.
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]], max: usize) -> (Vec<String>, usize, Splitter) {
        let mut sp = Splitter::default();
        let mut out = Vec::new();
        let mut long = 0;
        for c in chunks {
            sp.feed(c, max, |p| match p {
                Piece::Line(l) => out.push(String::from_utf8_lossy(l).into_owned()),
                Piece::TooLong => long += 1,
                Piece::Block(..) => unreachable!("feed() yields single lines"),
            });
        }
        (out, long, sp)
    }

    #[test]
    fn lines_across_chunks() {
        let (out, long, sp) = run(&[b"ab", b"c\nde", b"f\n\ngh"], 100);
        assert_eq!(out, ["abc", "def", ""]);
        assert_eq!(long, 0);
        assert_eq!(sp.pending_len(), 2);
    }

    #[test]
    fn long_line_discarded_while_streaming() {
        let big = vec![b'x'; 1000];
        let (out, long, sp) = run(&[b"ok\nxx", &big, &big, b"tail\nnext\n"], 100);
        assert_eq!(out, ["ok", "next"]);
        assert_eq!(long, 1);
        assert_eq!(sp.pending_len(), 0);
        assert!(sp.pending.capacity() <= 1000);
    }

    #[test]
    fn exactly_max_is_kept_and_max_plus_one_is_not() {
        let (out, long, _) = run(&[b"12345\n123456\n", b"12", b"345\r\n"], 5);
        assert_eq!(out, ["12345", "123456", "12345\r"]);
        assert_eq!(long, 0);
        assert_eq!(decode_line(b"123456", 5), Err(TooLong));
        assert_eq!(text(b"12345\r", 5), "12345");
    }

    #[test]
    fn mid_line_start_is_dropped_silently() {
        let mut sp = Splitter::default();
        sp.start_mid_line();
        let mut out = Vec::new();
        let mut long = 0;
        for c in [
            &b"rest of"[..],
            b" old
new
",
        ] {
            sp.feed(c, 4, |p| match p {
                Piece::Line(l) => out.push(l.to_vec()),
                Piece::TooLong => long += 1,
                Piece::Block(..) => unreachable!("feed() yields single lines"),
            });
        }
        assert_eq!(out, [b"new".to_vec()]);
        assert_eq!(long, 0);
    }

    fn run_blocks(chunks: &[&[u8]], max: usize) -> (Vec<String>, usize, usize) {
        let mut sp = Splitter::default();
        let (mut out, mut long, mut blocks) = (Vec::new(), 0, 0);
        for c in chunks {
            sp.feed_blocks(c, max, |p| match p {
                Piece::Line(l) => match decode_line(l, max) {
                    Ok((s, _)) if s.is_empty() => {}
                    Ok((s, _)) => out.push(s.into_owned()),
                    Err(_) => long += 1,
                },
                Piece::Block(text, n) => {
                    blocks += 1;
                    assert_eq!(text.split_terminator('\n').count(), n);
                    out.extend(text.split_terminator('\n').map(String::from));
                }
                Piece::TooLong => long += 1,
            });
        }
        (out, long, blocks)
    }

    #[test]
    fn blocks_give_the_same_lines_as_single_lines() {
        let (out, long, blocks) = run_blocks(&[b"ab", b"c\nd\ne\nf", b"g\nh\ni\nj"], 100);
        assert_eq!(out, ["abc", "d", "e", "fg", "h", "i"]);
        assert_eq!((long, blocks), (0, 2));
        // Anything unusual in the middle: line by line, same result as feed().
        for bad in [
            &b"x\nok\n\nok\ny"[..],
            b"x\nok\r\nok\ny",
            b"x\nok\0\nok\ny",
            b"x\nok\xff\nok\ny",
            b"x\n123456\nok\ny",
        ] {
            let (out, _, blocks) = run_blocks(&[bad], 5);
            assert_eq!(blocks, 0, "{bad:?}");
            let mut want = Vec::new();
            Splitter::default().feed(bad, 5, |p| {
                if let Piece::Line(l) = p
                    && let Ok((s, _)) = decode_line(l, 5)
                    && !s.is_empty()
                {
                    want.push(s.into_owned());
                }
            });
            assert_eq!(out, want, "{bad:?}");
        }
        let (out, _, blocks) = run_blocks(&["x\né\nok\ny".as_bytes()], 5);
        assert_eq!(
            (out, blocks),
            (vec!["x".to_string(), "é".into(), "ok".into()], 1)
        );
    }

    /// The block checks, one pass each over the whole block, against the
    /// plain per-line rule on many random blocks: line lengths around the
    /// limit, a bad byte here and there, now and then thousands of lines.
    #[test]
    fn block_checks_agree_with_a_line_by_line_reading() {
        fn per_line(body: &[u8], max: usize) -> Option<usize> {
            let mut n = 0;
            for l in body.split_inclusive(|&b| b == b'\n') {
                let l = &l[..l.len() - 1];
                if l.is_empty() || l.len() > max || l.contains(&b'\r') || l.contains(&0) {
                    return None;
                }
                n += 1;
            }
            std::str::from_utf8(body).ok().map(|_| n)
        }
        let mut next = crate::testrng::below(0x2545_f491_4f6c_dd1d_u64);
        let (mut blocks, mut rejected) = (0, 0);
        for round in 0..3000 {
            let max = 1 + next(40) as usize;
            let lines = if round % 100 == 0 { 9000 } else { 1 + next(60) };
            let mut body = Vec::new();
            for _ in 0..lines {
                let len = 1 + next(max as u64 + 2) as usize;
                body.extend((0..len).map(|_| b'a' + next(26) as u8));
                body.push(b'\n');
            }
            if next(3) == 0 {
                let at = next(body.len() as u64) as usize;
                body[at] = [0, b'\r', 0xff, 0xc3, b'\n'][next(5) as usize];
                if body.last() != Some(&b'\n') {
                    body.push(b'\n');
                }
            }
            let got = check_block(&body, max).map(|(t, n)| {
                assert_eq!(t.as_bytes(), &body[..]);
                n
            });
            assert_eq!(got, per_line(&body, max), "round {round}, max {max}");
            blocks += usize::from(got.is_some());
            rejected += usize::from(got.is_none());
        }
        // Both outcomes were exercised plenty.
        assert!(blocks > 300 && rejected > 300, "{blocks} {rejected}");
    }

    fn text(line: &[u8], max: usize) -> String {
        decode_line(line, max)
            .expect("within the limit")
            .0
            .into_owned()
    }

    #[test]
    fn undecodable_bytes_are_replaced_and_counted() {
        let fix = |line: &[u8]| decode_line(line, 100).expect("short").1;
        assert_eq!(text(b"a\0b", 10), "a\u{FFFD}b");
        assert_eq!(text(b"a\xffb", 10), "a\u{FFFD}b");
        assert_eq!(text(b"", 10), "");
        assert_eq!(text("é".as_bytes(), 10), "é");
        // The padding a crash leaves before the next line is dropped: the stamp stays first.
        assert_eq!(text(b"\0\0\0Nov 22 x\0y", 20), "Nov 22 x\u{FFFD}y");
        assert_eq!(text(b"\0\0\0", 20), "");
        assert_eq!(
            fix(b"\0a\xc3"),
            Repairs {
                invalid_utf8: true,
                nul: true
            }
        );
        assert_eq!(fix(b"plain"), Repairs::default());
        // Overlong or cut-off forms of ']', '[' and '\n' never decode to them.
        for bad in [
            &b"\xc1\x9d"[..],
            b"\xc1\x9b",
            b"\xc0\x8a",
            b"\xe0\x80\x8a",
            b"\xe2\x80",
        ] {
            let t = text(bad, 10);
            assert!(t.chars().all(|c| c == '\u{FFFD}'), "{bad:?} -> {t:?}");
        }
        // The limit is on the bytes read, before replacement.
        assert_eq!(text(&[0xff; 5], 5), "\u{FFFD}".repeat(5));
        assert_eq!(decode_line(&[0xff; 6], 5), Err(TooLong));
    }

    /// Every MATCH fixture of every built-in filter, with bytes an attacker could put in a
    /// user name (not UTF-8, NUL, overlong forms of `]` and newline) around text naming
    /// another host, put after each `=`, into each `<...>` and at the end: decoded as the
    /// reader delivers it, the line never names that host, and it still names the real
    /// one where the filter matches at all.
    #[test]
    fn undecodable_bytes_cannot_frame_another_host_with_the_builtin_filters() {
        use crate::filter::{Filter, LineMatch};
        const FRAMED: &str = "203.0.113.9";
        let payloads: [&[u8]; 9] = [
            b"\xffunknown[203.0.113.9]",
            b"\0]: unknown[203.0.113.9]: SASL LOGIN authentication failed: x",
            b"\xc1\x9d: unknown[203.0.113.9]",
            b"x\xc0\x8aNov 22 05:27:23 mx postfix/smtpd[1]: warning: unknown[203.0.113.9]: SASL LOGIN authentication failed: x",
            b"\xe2\x80[203.0.113.9]",
            b"\0\0x>, method=PLAIN, rip=203.0.113.9, lip=192.0.2.1",
            b"\xff, IP address 203.0.113.9",
            b" rhost=203.0.113.9\xfe",
            b"\xf0\x9f\x98 from unknown[203.0.113.9]\0",
        ];
        let (mut checked, mut still_matched) = (0, 0);
        for name in Filter::builtin_names() {
            let f = Filter::builtin(name).expect("built-in");
            let path = format!(
                "{}/tests/data/filters/{name}.log",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).expect("fixtures");
            for l in text.lines().filter(|l| l.starts_with("MATCH ")) {
                let (head, line) = l.split_once(" | ").expect("fixture");
                let host: std::net::IpAddr = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|h| h.parse().ok())
                    .expect("fixture host");
                let line = line.as_bytes();
                for p in payloads {
                    let mut variants = vec![[line, p].concat(), [b"\0\0\0", line, p].concat()];
                    for (i, &c) in line.iter().enumerate() {
                        let end = match c {
                            b'=' => i + 1,
                            b'<' => match line[i..].iter().position(|&b| b == b'>') {
                                Some(k) => i + k,
                                None => continue,
                            },
                            _ => continue,
                        };
                        variants.push([&line[..=i], p, &line[end..]].concat());
                    }
                    for v in variants {
                        let (decoded, fix) =
                            decode_line(&v, crate::source::MAX_LINE).expect("short");
                        assert!(fix.invalid_utf8 || fix.nul, "{v:?}");
                        checked += 1;
                        if let LineMatch::Failure(h) = f.check(&decoded) {
                            assert_ne!(h.host.to_string(), FRAMED, "{name}: framed by {decoded:?}");
                            assert_eq!(h.host, host, "{name}: {decoded:?}");
                            still_matched += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
        // Most repaired lines still count as the failure they are.
        assert!(still_matched * 2 > checked, "{still_matched} of {checked}");
    }

    /// The case of the issue: the SASL user name carries bytes that are not UTF-8 and a
    /// NUL; the failure still counts, for the client that made it.
    #[test]
    fn a_sasl_failure_with_an_undecodable_user_name_still_matches() {
        use crate::filter::{Filter, LineMatch};
        let f = Filter::builtin("postfix-sasl").expect("built-in");
        let line = b"Nov 22 05:27:23 mx postfix/smtpd[4711]: warning: unknown[203.0.113.5]: SASL LOGIN authentication failed: authentication failure, sasl_username=\xff\xfeadmin\0]: unknown[198.51.100.7]";
        let (text, fix) = decode_line(line, 1000).expect("short");
        assert_eq!(
            fix,
            Repairs {
                invalid_utf8: true,
                nul: true
            }
        );
        match f.check(&text) {
            LineMatch::Failure(h) => assert_eq!(h.host.to_string(), "203.0.113.5"),
            other => panic!("{other:?} for {text:?}"),
        }
    }
}

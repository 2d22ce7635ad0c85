//! Splitting a byte stream into bounded lines, and the checks every line passes.
//!
//! Input arrives in arbitrary chunks; the splitter keeps at most `max` bytes of an
//! unfinished line. Once a line exceeds `max` the rest of it is discarded as it arrives, so
//! a multi-megabyte line costs no more memory than a normal one.

use super::Counters;

/// Why a complete line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    TooLong,
    Nul,
    InvalidUtf8,
}

impl Reject {
    pub(crate) fn count(self, stats: &Counters) {
        let a = match self {
            Reject::TooLong => &stats.too_long,
            Reject::Nul => &stats.nul,
            Reject::InvalidUtf8 => &stats.invalid_utf8,
        };
        Counters::add(a, 1);
    }
}

/// Check a complete line (without its newline). A trailing `\r` is dropped; `Ok(None)` for
/// an empty line.
pub(crate) fn check(line: &[u8], max: usize) -> Result<Option<&str>, Reject> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max {
        return Err(Reject::TooLong);
    }
    if line.is_empty() {
        return Ok(None);
    }
    if memchr::memchr(0, line).is_some() {
        return Err(Reject::Nul);
    }
    match std::str::from_utf8(line) {
        Ok(s) => Ok(Some(s)),
        Err(_) => Err(Reject::InvalidUtf8),
    }
}

/// Complete lines (`body` ends with `\n`) that all pass [`check`] unchanged:
/// the text and the number of lines. Each check is one pass over the whole
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
    /// Start of a line whose newline has not arrived yet (never longer than `max`).
    pending: Vec<u8>,
    /// The current line already exceeded `max`; drop bytes up to the next newline.
    discarding: bool,
    /// Reading started in the middle of a line: drop bytes up to the next newline, uncounted.
    resync: bool,
}

/// One element produced by [`Splitter::feed`].
pub(crate) enum Piece<'a> {
    Line(&'a [u8]),
    /// Several complete lines that all passed [`check`], each ending with
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
                // +1 leaves room for a trailing '\r' that check() strips.
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
        assert_eq!(check(b"123456", 5), Err(Reject::TooLong));
        assert_eq!(check(b"12345\r", 5), Ok(Some("12345")));
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
                Piece::Line(l) => match check(l, max) {
                    Ok(Some(s)) => out.push(s.to_string()),
                    Ok(None) => {}
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
                    && let Ok(Some(s)) = check(l, 5)
                {
                    want.push(s.to_string());
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

    #[test]
    fn checks() {
        assert_eq!(check(b"a\0b", 10), Err(Reject::Nul));
        assert_eq!(check(b"a\xffb", 10), Err(Reject::InvalidUtf8));
        assert_eq!(check(b"", 10), Ok(None));
        assert_eq!(check("é".as_bytes(), 10), Ok(Some("é")));
    }
}

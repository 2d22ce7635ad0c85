//! Go's `time.Duration` text, as the Local API writes it (`3h59m46.15s`,
//! `-21.399584ms`, `1h`, `0s`): the remaining time of every decision. A
//! decision that was just deleted or ran out has a negative one.
use std::time::Duration;

/// A Go duration: a sign and a magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    pub negative: bool,
    pub magnitude: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` is not a Go duration (like 3h59m46.15s)", .0.escape_default())]
pub struct BadDuration(pub String);

/// Longest text accepted: a real duration is a few dozen bytes.
const MAX_LEN: usize = 64;

impl GoDuration {
    /// The time left, None when the duration is negative or zero.
    pub fn remaining(&self) -> Option<Duration> {
        (!self.negative && !self.magnitude.is_zero()).then_some(self.magnitude)
    }

    pub fn parse(s: &str) -> Result<Self, BadDuration> {
        let bad = || BadDuration(s.chars().take(MAX_LEN).collect());
        if s.len() > MAX_LEN {
            return Err(bad());
        }
        let (negative, mut rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if rest == "0" {
            return Ok(GoDuration {
                negative,
                magnitude: Duration::ZERO,
            });
        }
        if rest.is_empty() {
            return Err(bad());
        }
        // Summed in nanoseconds, as Go does (its range is +-292 years).
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let int = &rest[..int_len];
            rest = &rest[int_len..];
            let mut frac = "";
            if let Some(r) = rest.strip_prefix('.') {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                frac = &r[..n];
                rest = &r[n..];
            }
            if int.is_empty() && frac.is_empty() {
                return Err(bad());
            }
            let unit_len = rest
                .char_indices()
                .find(|(_, c)| c.is_ascii_digit() || *c == '.')
                .map_or(rest.len(), |(i, _)| i);
            let unit: u128 = match &rest[..unit_len] {
                "ns" => 1,
                "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60 * 1_000_000_000,
                "h" => 3_600 * 1_000_000_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            let whole: u128 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| bad())?
            };
            let mut part = whole.checked_mul(unit).ok_or_else(bad)?;
            // Fraction digits beyond a nanosecond do not count.
            let mut scale = unit;
            for d in frac.bytes() {
                scale /= 10;
                if scale == 0 {
                    break;
                }
                part += u128::from(d - b'0') * scale;
            }
            total = total.checked_add(part).ok_or_else(bad)?;
        }
        if total > i64::MAX as u128 {
            return Err(bad());
        }
        Ok(GoDuration {
            negative,
            magnitude: Duration::from_nanos(total as u64),
        })
    }
}

/// A length as Go parses it back: whole hours, minutes and seconds
/// (`1h0m0s`, `10m0s`, `45s`); fractions of a second are dropped.
pub fn format(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> (bool, u128) {
        let d = GoDuration::parse(s).unwrap();
        (d.negative, d.magnitude.as_nanos())
    }

    #[test]
    fn reads_what_the_lapi_writes() {
        assert_eq!(ms("3h59m46.15s"), (false, 14_386_150_000_000));
        assert_eq!(ms("59m59.18034804s"), (false, 3_599_180_348_040));
        assert_eq!(ms("-21.399584ms"), (true, 21_399_584));
        assert_eq!(ms("1h"), (false, 3_600_000_000_000));
        assert_eq!(ms("0s"), (false, 0));
        assert_eq!(ms("0"), (false, 0));
        assert_eq!(ms("1.5h"), (false, 5_400_000_000_000));
        assert_eq!(ms("2µs"), (false, 2_000));
        assert_eq!(ms("2us"), (false, 2_000));
        assert_eq!(ms("7ns"), (false, 7));
        assert_eq!(ms(".5s"), (false, 500_000_000));
        assert_eq!(ms("1.0000000001s"), (false, 1_000_000_000));
        assert_eq!(ms("2562047h47m16.854775807s"), (false, i64::MAX as u128));
        assert_eq!(
            GoDuration::parse("-5s").unwrap().remaining(),
            None,
            "a deleted decision has no time left"
        );
        assert_eq!(
            GoDuration::parse("4h").unwrap().remaining(),
            Some(Duration::from_secs(4 * 3600))
        );
    }

    #[test]
    fn refuses_what_go_refuses() {
        for bad in [
            "",
            "-",
            "h",
            "1",
            "1d",
            "1 h",
            "1h ",
            "1.h2",
            "..1s",
            "1e3s",
            "999999999999999999999h",
            "2562047h47m16.854775808s",
            &"1s".repeat(40),
            "\u{1b}[31m1s",
        ] {
            assert!(GoDuration::parse(bad).is_err(), "{bad:?}");
        }
        // The message shows escapes escaped.
        let e = GoDuration::parse("\u{1b}x").unwrap_err().to_string();
        assert!(!e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn formats_lengths_go_reads_back() {
        for (secs, text) in [
            (3600, "1h0m0s"),
            (600, "10m0s"),
            (45, "45s"),
            (90061, "25h1m1s"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(format(d), text);
            assert_eq!(GoDuration::parse(text).unwrap().magnitude, d);
        }
    }
}

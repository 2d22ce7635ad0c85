//! Log timestamps: classic syslog (no year), RFC 3339 / ISO 8601 (rsyslog
//! high precision, RFC 5424), Kerio's `[dd/Mon/yyyy hh:mm:ss]`, daemontools
//! TAI64N, and journal realtime microseconds.
//!
//! Parsing is hand-written over bytes because it runs once per log line on
//! the ingest path; a regex here would cost more than the filters.
use jiff::{
    Timestamp,
    civil::{Date, DateTime},
    tz::{Offset, TimeZone},
};

/// A yearless stamp may be at most this far ahead of the reference time
/// (clock skew between the logging host and us); beyond, it is from the
/// year before.
const FUTURE_SLACK_SECS: i64 = 24 * 3600;

/// Parses the timestamp at the start of a log line.
///
/// A stamp without a year (syslog's `Dec 14 09:58:37`) gets the year that
/// puts it nearest to the reference time without being more than a day
/// after it: each line on its own, whatever the line before it said, so a
/// replayed log crosses December -> January correctly either way and a
/// fresh line after an old one is still fresh.
#[derive(Clone)]
pub struct TimeParser {
    tz: TimeZone,
    /// Local civil hour -> its first instant; consecutive lines share it, and
    /// a time zone lookup costs more than the rest of the parse.
    hour_cache: Option<((i16, i8, i8, i8), i64)>,
    /// `now` truncated to the hour -> local year of `now`.
    now_year: Option<(i64, i16)>,
    /// The candidate years of the previous yearless stamp's hour: the next
    /// stamp of the same month, day and hour (and reference) picks among
    /// the same hour starts.
    syslog_hour: Option<SyslogHour>,
}

#[derive(Debug, Clone, Copy)]
struct SyslogHour {
    key: (i8, i8, i8),
    now: Timestamp,
    /// Start of that hour in the year after the reference's, in its year
    /// and in the year before (`None`: no such date, Feb 29).
    bases: [Option<i64>; 3],
}

impl Default for TimeParser {
    fn default() -> Self {
        Self::new()
    }
}

impl TimeParser {
    /// Local time from the system zone (the `TZ` environment variable wins).
    pub fn new() -> Self {
        Self::with_time_zone(TimeZone::system())
    }

    pub fn with_time_zone(tz: TimeZone) -> Self {
        TimeParser {
            tz,
            hour_cache: None,
            now_year: None,
            syslog_hour: None,
        }
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// Forget cached hours (nothing a line means depends on them).
    pub fn reset(&mut self) {
        self.syslog_hour = None;
    }

    /// The timestamp at the start of `line` (leading blanks allowed) and the
    /// byte offset just after it. `now` is the reference for the year of
    /// yearless stamps: the current time, or a replayed file's
    /// modification time.
    pub fn parse(&mut self, line: &str, now: Timestamp) -> Option<(Timestamp, usize)> {
        let b = line.as_bytes();
        let start = b.iter().position(|&c| c != b' ' && c != b'\t')?;
        let s = &b[start..];
        let (ts, len) = match s[0] {
            b'0'..=b'9' => self.iso(s)?,
            b'<' => self.with_pri(s, now)?,
            b'[' => self.bracketed(s)?,
            b'@' => tai64n(s)?,
            _ => self.syslog(s, now)?,
        };
        Some((ts, start + len))
    }

    /// `<PRI>` then either RFC 5424 (`<34>1 2026-...`) or a BSD stamp.
    fn with_pri(&mut self, s: &[u8], now: Timestamp) -> Option<(Timestamp, usize)> {
        let close = s.iter().take(5).position(|&c| c == b'>')?;
        if close < 2 || !s[1..close].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut i = close + 1;
        let rest = &s[i..];
        if rest.len() > 2 && rest[0] == b'1' && rest[1] == b' ' {
            i += 2;
            let (ts, n) = self.iso(&s[i..])?;
            return Some((ts, i + n));
        }
        let (ts, n) = self.syslog(rest, now)?;
        Some((ts, i + n))
    }

    /// `Dec 14 09:58:37` with optional `.ffffff`, day space- or zero-padded.
    fn syslog(&mut self, s: &[u8], now: Timestamp) -> Option<(Timestamp, usize)> {
        if s.len() < 14 {
            return None;
        }
        let month = month_number(&s[0..3])?;
        if s[3] != b' ' {
            return None;
        }
        let mut i = 4;
        if s[i] == b' ' {
            i += 1;
        }
        let (day, n) = digits(&s[i..], 1, 2)?;
        i += n;
        if s.get(i) != Some(&b' ') {
            return None;
        }
        i += 1;
        let (h, m, sec, n) = hms(&s[i..])?;
        i += n;
        let (nanos, n) = fraction(&s[i..]);
        i += n;
        if !ends_token(s, i) {
            return None;
        }
        let key = (month as i8, day as i8, h);
        let bases = match self.syslog_hour {
            Some(c) if c.key == key && c.now == now => c.bases,
            _ => {
                let y = self.local_year(now);
                let bases = [y.checked_add(1), Some(y), y.checked_sub(1)]
                    .map(|y| y.and_then(|y| self.local_hour(y, key.0, key.1, h)));
                self.syslog_hour = Some(SyslogHour { key, now, bases });
                bases
            }
        };
        let secs = i64::from(m) * 60 + i64::from(sec);
        let base = nearest_not_after(&bases, secs, now)?;
        let ts = Timestamp::new(base + secs, nanos).ok()?;
        Some((ts, i))
    }

    fn local_year(&mut self, now: Timestamp) -> i16 {
        let hour = now.as_second().div_euclid(3600);
        if let Some((h, y)) = self.now_year
            && h == hour
        {
            return y;
        }
        let y = now.to_zoned(self.tz.clone()).year();
        self.now_year = Some((hour, y));
        y
    }

    /// Unix second of local `year-month-day hour:00:00`.
    fn local_hour(&mut self, year: i16, month: i8, day: i8, hour: i8) -> Option<i64> {
        let key = (year, month, day, hour);
        if let Some((k, v)) = self.hour_cache
            && k == key
        {
            return Some(v);
        }
        // Feb 29 in an inferred non-leap year is not a date: no stamp.
        let dt = Date::new(year, month, day).ok()?.at(hour, 0, 0, 0);
        let v = self
            .tz
            .to_ambiguous_timestamp(dt)
            .compatible()
            .ok()?
            .as_second();
        self.hour_cache = Some((key, v));
        Some(v)
    }

    /// `2026-11-22T05:27:23.123456+01:00`, `2026-11-22 05:27:23`, `...Z`.
    fn iso(&mut self, s: &[u8]) -> Option<(Timestamp, usize)> {
        if s.len() < 19 {
            return None;
        }
        let (year, _) = digits(&s[0..4], 4, 4)?;
        let (month, _) = digits(&s[5..7], 2, 2)?;
        let (day, _) = digits(&s[8..10], 2, 2)?;
        if s[4] != b'-' || s[7] != b'-' || !(s[10] == b'T' || s[10] == b' ') {
            return None;
        }
        let (h, m, sec, n) = hms(&s[11..])?;
        let mut i = 11 + n;
        let (nanos, n) = fraction(&s[i..]);
        i += n;
        let offset = match s.get(i) {
            Some(b'Z' | b'z') => {
                i += 1;
                Some(Offset::UTC)
            }
            Some(&c @ (b'+' | b'-')) => {
                let (oh, _) = digits(s.get(i + 1..i + 3)?, 2, 2)?;
                i += 3;
                let mut om = 0;
                if s.get(i) == Some(&b':') {
                    om = digits(s.get(i + 1..i + 3)?, 2, 2)?.0;
                    i += 3;
                } else if let Some(d) = s.get(i..i + 2)
                    && let Some((v, _)) = digits(d, 2, 2)
                {
                    om = v;
                    i += 2;
                }
                let secs = (oh * 3600 + om * 60) as i32;
                Some(Offset::from_seconds(if c == b'-' { -secs } else { secs }).ok()?)
            }
            _ => None,
        };
        if !ends_token(s, i) {
            return None;
        }
        let dt = DateTime::new(year as i16, month as i8, day as i8, h, m, sec, nanos).ok()?;
        let ts = match offset {
            Some(o) => o.to_timestamp(dt).ok()?,
            None => {
                let base = self.local_hour(dt.year(), dt.month(), dt.day(), h)?;
                Timestamp::new(base + i64::from(m) * 60 + i64::from(sec), nanos).ok()?
            }
        };
        Some((ts, i))
    }

    /// Kerio Connect: `[17/Jun/2011 17:00:45]`, local time.
    fn bracketed(&mut self, s: &[u8]) -> Option<(Timestamp, usize)> {
        if s.len() < 22 || s[3] != b'/' || s[7] != b'/' || s[12] != b' ' {
            return None;
        }
        let (day, _) = digits(&s[1..3], 2, 2)?;
        let month = month_number(&s[4..7])?;
        let (year, _) = digits(&s[8..12], 4, 4)?;
        let (h, m, sec, n) = hms(&s[13..])?;
        let i = 13 + n;
        if s.get(i) != Some(&b']') {
            return None;
        }
        let base = self.local_hour(year as i16, month as i8, day as i8, h)?;
        let ts = Timestamp::from_second(base + i64::from(m) * 60 + i64::from(sec)).ok()?;
        Some((ts, i + 1))
    }
}

/// Of the same stamp in the year after the reference's, its year and the
/// year before (hour starts in `bases`, `secs` into the hour): the start of
/// the hour of the latest one not more than a day after `now`, which is
/// the one nearest to it.
fn nearest_not_after(bases: &[Option<i64>; 3], secs: i64, now: Timestamp) -> Option<i64> {
    let limit = now.as_second().saturating_add(FUTURE_SLACK_SECS);
    bases.iter().flatten().copied().find(|&b| b + secs <= limit)
}

/// A local civil time without a year (`month day hh:mm:ss` in `tz`), given
/// the year that puts it nearest to `now` and not more than a day after it.
pub fn nearest_year(
    tz: &TimeZone,
    month: i8,
    day: i8,
    hour: i8,
    minute: i8,
    second: i8,
    now: Timestamp,
) -> Option<Timestamp> {
    // Out-of-range fields (a 24th hour) are no time, not a panic.
    DateTime::new(2000, month, day, hour, minute, second, 0).ok()?;
    let y = now.to_zoned(tz.clone()).year();
    let bases = [y.checked_add(1), Some(y), y.checked_sub(1)].map(|y| {
        let dt = DateTime::new(y?, month, day, hour, 0, 0, 0).ok()?;
        Some(tz.to_ambiguous_timestamp(dt).compatible().ok()?.as_second())
    });
    let secs = i64::from(minute) * 60 + i64::from(second);
    Timestamp::from_second(nearest_not_after(&bases, secs, now)? + secs).ok()
}

/// Byte length of the timestamp at the start of `line` (after leading
/// blanks), without time zone work: for callers that only need to skip it.
pub fn stamp_len(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let start = b.iter().position(|&c| c != b' ' && c != b'\t')?;
    let s = &b[start..];
    let n = match s[0] {
        b'0'..=b'9' => {
            // Enough structure to not mistake a message for a date.
            if s.len() >= 19 && s[4] == b'-' && s[7] == b'-' && s[13] == b':' {
                let mut i = 19;
                while i < s.len() && s[i] != b' ' {
                    i += 1;
                }
                i
            } else {
                return None;
            }
        }
        b'<' | b'[' | b'@' => {
            // Rare forms: the full parser settles them (UTC, no year state).
            let mut p = TimeParser::with_time_zone(TimeZone::UTC);
            p.parse(line, Timestamp::UNIX_EPOCH)?.1 - start
        }
        _ => {
            if s.len() < 14 || month_number(&s[0..3]).is_none() || s[3] != b' ' {
                return None;
            }
            let mut i = 4;
            if s[i] == b' ' {
                i += 1;
            }
            let (_, n) = digits(&s[i..], 1, 2)?;
            i += n + 1;
            let (_, _, _, n) = hms(s.get(i..)?)?;
            i += n;
            i += fraction(&s[i..]).1;
            i
        }
    };
    Some(start + n)
}

/// Journal `__REALTIME_TIMESTAMP` (microseconds since the Unix epoch).
pub fn from_journal_micros(us: u64) -> Option<Timestamp> {
    Timestamp::from_microsecond(i64::try_from(us).ok()?).ok()
}

/// daemontools `@4000000044c3bd0d2e9dd3f4`: 2^62 + seconds, then nanoseconds.
/// Leap seconds are ignored, as fail2ban and tai64nlocal in practice do.
fn tai64n(s: &[u8]) -> Option<(Timestamp, usize)> {
    if s.len() < 25 || !ends_token(s, 25) {
        return None;
    }
    let hex = std::str::from_utf8(&s[1..25]).ok()?;
    let secs = u64::from_str_radix(&hex[..16], 16)
        .ok()?
        .checked_sub(1 << 62)?;
    let nanos = u32::from_str_radix(&hex[16..], 16).ok()?;
    let ts = Timestamp::new(i64::try_from(secs).ok()?, i32::try_from(nanos).ok()?).ok()?;
    Some((ts, 25))
}

fn month_number(s: &[u8]) -> Option<u8> {
    let m = match [s[0] | 0x20, s[1] | 0x20, s[2] | 0x20] {
        [b'j', b'a', b'n'] => 1,
        [b'f', b'e', b'b'] => 2,
        [b'm', b'a', b'r'] => 3,
        [b'a', b'p', b'r'] => 4,
        [b'm', b'a', b'y'] => 5,
        [b'j', b'u', b'n'] => 6,
        [b'j', b'u', b'l'] => 7,
        [b'a', b'u', b'g'] => 8,
        [b's', b'e', b'p'] => 9,
        [b'o', b'c', b't'] => 10,
        [b'n', b'o', b'v'] => 11,
        [b'd', b'e', b'c'] => 12,
        _ => return None,
    };
    Some(m)
}

/// Between `min` and `max` ASCII digits: (value, count).
fn digits(s: &[u8], min: usize, max: usize) -> Option<(u32, usize)> {
    let mut v = 0u32;
    let mut n = 0;
    while n < max && n < s.len() && s[n].is_ascii_digit() {
        v = v * 10 + u32::from(s[n] - b'0');
        n += 1;
    }
    (n >= min).then_some((v, n))
}

/// `HH:MM:SS` -> (h, m, s, 8).
fn hms(s: &[u8]) -> Option<(i8, i8, i8, usize)> {
    if s.len() < 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    let (h, _) = digits(&s[0..2], 2, 2)?;
    let (m, _) = digits(&s[3..5], 2, 2)?;
    let (sec, _) = digits(&s[6..8], 2, 2)?;
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // A leap second is folded into the last regular one.
    Some((h as i8, m as i8, sec.min(59) as i8, 8))
}

/// Optional `.ffffff` (or `,fff`): (nanoseconds, bytes consumed).
fn fraction(s: &[u8]) -> (i32, usize) {
    if s.len() < 2 || !(s[0] == b'.' || s[0] == b',') || !s[1].is_ascii_digit() {
        return (0, 0);
    }
    let mut nanos = 0i32;
    let mut n = 1;
    while n < s.len() && s[n].is_ascii_digit() {
        if n <= 9 {
            nanos = nanos * 10 + i32::from(s[n] - b'0');
        }
        n += 1;
    }
    for _ in n.min(10)..10 {
        nanos *= 10;
    }
    (nanos, n)
}

/// A stamp must be followed by a separator (or the end), so `Dec 14
/// 09:58:371` is not a date.
fn ends_token(s: &[u8], i: usize) -> bool {
    matches!(s.get(i), None | Some(b' ' | b'\t' | b':' | b']' | b','))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zurich() -> TimeZone {
        TimeZone::get("Europe/Zurich").unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn local(p: &TimeParser, ts: Timestamp) -> String {
        ts.to_zoned(p.time_zone().clone()).datetime().to_string()
    }

    impl TimeParser {
        fn clone_zone(&self) -> TimeParser {
            TimeParser::with_time_zone(self.tz.clone())
        }
    }

    #[test]
    fn syslog_infers_current_year() {
        let mut p = TimeParser::with_time_zone(zurich());
        let line = "Aug 14 10:00:01 mail postfix/smtpd[1]: x";
        let (ts, off) = p.parse(line, at("2005-08-14T10:00:00Z")).unwrap();
        assert_eq!(local(&p, ts), "2005-08-14T10:00:01");
        assert_eq!(&line[off..], " mail postfix/smtpd[1]: x");
    }

    #[test]
    fn syslog_single_digit_and_padded_days() {
        let mut p = TimeParser::with_time_zone(zurich());
        let now = at("2005-08-14T10:00:00Z");
        let (ts, off) = p.parse("Aug 3 15:30:49 ksusha x", now).unwrap();
        assert_eq!(local(&p, ts), "2005-08-03T15:30:49");
        assert_eq!(off, 14);
        let (ts, _) = p.parse("Aug  4 16:47:52 mail3 x", now).unwrap();
        assert_eq!(local(&p, ts), "2005-08-04T16:47:52");
        let (ts, _) = p.parse("Jul 02 13:49:31 hostname x", now).unwrap();
        assert_eq!(local(&p, ts), "2005-07-02T13:49:31");
    }

    #[test]
    fn december_line_read_in_january_is_last_year() {
        let mut p = TimeParser::with_time_zone(zurich());
        let (ts, _) = p
            .parse("Dec 31 23:59:59 h x", at("2026-01-02T08:00:00Z"))
            .unwrap();
        assert_eq!(local(&p, ts), "2025-12-31T23:59:59");
    }

    #[test]
    fn within_one_day_ahead_stays_this_year() {
        let mut p = TimeParser::with_time_zone(zurich());
        // 11:00 local next day is < now + 24h (now = 12:00 local).
        let (ts, _) = p
            .parse("Aug 15 11:00:00 h x", at("2005-08-14T10:00:00Z"))
            .unwrap();
        assert_eq!(local(&p, ts), "2005-08-15T11:00:00");
        let mut p = TimeParser::with_time_zone(zurich());
        let (ts, _) = p
            .parse("Aug 16 11:00:00 h x", at("2005-08-14T10:00:00Z"))
            .unwrap();
        assert_eq!(local(&p, ts), "2004-08-16T11:00:00");
    }

    /// Issue 15: the year of a yearless stamp comes from the reference time
    /// alone, for each line, whatever came before it.
    #[test]
    fn year_is_inferred_per_line_against_the_reference() {
        let mut p = TimeParser::with_time_zone(zurich());
        // Reference Dec 1: a line from last Dec 20, then one from today.
        let now = at("2026-12-01T10:00:00Z");
        let (a, _) = p.parse("Dec 20 08:00:00 h x", now).unwrap();
        let (b, _) = p.parse("Dec  1 10:59:00 h x", now).unwrap();
        assert_eq!(local(&p, a), "2025-12-20T08:00:00");
        assert_eq!(local(&p, b), "2026-12-01T10:59:00");
        // The same lines in the other order, and each alone, agree.
        let (b2, _) = p.parse("Dec  1 10:59:00 h x", now).unwrap();
        let (a2, _) = p.parse("Dec 20 08:00:00 h x", now).unwrap();
        assert_eq!((a2, b2), (a, b));
    }

    #[test]
    fn december_and_january_cross_the_year_both_ways() {
        // Early January: December lines are last year's.
        let now = at("2027-01-01T01:00:00Z");
        for order in [[0, 1], [1, 0]] {
            let mut p = TimeParser::with_time_zone(zurich());
            let lines = ["Dec 31 23:59:58 h x", "Jan  1 00:00:03 h x"];
            let mut got = [String::new(), String::new()];
            for i in order {
                got[i] = local(&p.clone_zone(), p.parse(lines[i], now).unwrap().0);
            }
            assert_eq!(got, ["2026-12-31T23:59:58", "2027-01-01T00:00:03"]);
        }
        // Late December, the log host's clock a little ahead: its January
        // line is the coming one, its December lines this year's.
        let now = at("2026-12-31T22:59:00Z");
        let mut p = TimeParser::with_time_zone(zurich());
        let (j, _) = p.parse("Jan  1 00:00:03 h x", now).unwrap();
        let (d, _) = p.parse("Dec 31 23:59:58 h x", now).unwrap();
        assert_eq!(local(&p, j), "2027-01-01T00:00:03");
        assert_eq!(local(&p, d), "2026-12-31T23:59:58");
        // A January line read in late December that is not within a day
        // ahead is from the January that passed.
        let (old, _) = p.parse("Jan  2 08:00:00 h x", now).unwrap();
        assert_eq!(local(&p, old), "2026-01-02T08:00:00");
    }

    #[test]
    fn a_day_ahead_is_the_limit_to_the_second() {
        let now = at("2005-08-14T10:00:00Z"); // 12:00 in Zurich
        let mut p = TimeParser::with_time_zone(zurich());
        let (a, _) = p.parse("Aug 15 12:00:00 h x", now).unwrap();
        let (b, _) = p.parse("Aug 15 12:00:01 h x", now).unwrap();
        assert_eq!(local(&p, a), "2005-08-15T12:00:00");
        assert_eq!(local(&p, b), "2004-08-15T12:00:01");
        let direct = nearest_year(&zurich(), 8, 15, 12, 0, 1, now).unwrap();
        assert_eq!(direct, b);
    }

    #[test]
    fn rfc3339_with_fraction_and_zone() {
        let mut p = TimeParser::with_time_zone(zurich());
        let line = "2026-11-22T05:27:23.123456+01:00 mail postfix/smtpd[1]: x";
        let (ts, off) = p.parse(line, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(ts, at("2026-11-22T04:27:23.123456Z"));
        assert_eq!(&line[off..off + 5], " mail");
        let (ts, _) = p
            .parse("2026-11-22T05:27:23Z h x", Timestamp::UNIX_EPOCH)
            .unwrap();
        assert_eq!(ts, at("2026-11-22T05:27:23Z"));
        let (ts, _) = p
            .parse("2026-11-22T05:27:23-0530 h", Timestamp::UNIX_EPOCH)
            .unwrap();
        assert_eq!(ts, at("2026-11-22T10:57:23Z"));
    }

    #[test]
    fn iso_without_zone_is_local() {
        let mut p = TimeParser::with_time_zone(zurich());
        let (ts, off) = p
            .parse(
                "2013-08-11 03:56:40 auth-worker(default): x",
                Timestamp::UNIX_EPOCH,
            )
            .unwrap();
        assert_eq!(local(&p, ts), "2013-08-11T03:56:40");
        assert_eq!(off, 19);
    }

    #[test]
    fn rfc5424_header() {
        let mut p = TimeParser::with_time_zone(zurich());
        let line = "<34>1 2026-11-22T05:27:23.5Z mail postfix/smtpd 123 - - warning: x";
        let (ts, off) = p.parse(line, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(ts, at("2026-11-22T05:27:23.5Z"));
        assert_eq!(&line[off..], " mail postfix/smtpd 123 - - warning: x");
        // BSD syslog with a priority.
        let (ts, _) = p
            .parse("<13>Aug 14 10:00:01 h x", at("2005-08-14T10:00:00Z"))
            .unwrap();
        assert_eq!(local(&p, ts), "2005-08-14T10:00:01");
    }

    #[test]
    fn kerio_and_tai64n() {
        let mut p = TimeParser::with_time_zone(zurich());
        let line = "[17/Jun/2011 17:00:45] Attempt to deliver";
        let (ts, off) = p.parse(line, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(local(&p, ts), "2011-06-17T17:00:45");
        assert_eq!(&line[off..], " Attempt to deliver");
        let (ts, off) = p
            .parse(
                "@400000004c91b044077a9e94 imap-login: x",
                Timestamp::UNIX_EPOCH,
            )
            .unwrap();
        assert_eq!(ts.as_second(), 1_284_616_260);
        assert_eq!(off, 25);
    }

    /// The same-hour shortcut answers exactly what a full parse would,
    /// over year turns, failed stamps in between, changed `now`, and
    /// stamps that differ only after their common prefix.
    #[test]
    fn repeated_stamps_parse_as_anew() {
        let lines = [
            "Dec 31 23:59:59 mail x",
            "Dec 31 23:59:59 mail y",
            "Dec 31 23:00:00 mail y",
            "Dec 31 23:30:01.25 mail y",
            "Dec 31 23:59:59",
            "Dec 31 23:59:59",
            "Dec 31 23:59:59.5 mail x",
            "Dec 31 23:59:59.5 mail x",
            "Dec 31 23:59:59x mail",
            "Jan  1 00:00:00 mail x",
            "Dec 31 23:59:59 mail x",
            "Feb 29 10:00:00 mail x",
            "Feb 29 10:00:00 mail x",
            "Jan  1 00:00:00 mail x",
            "  Jan  1 00:00:00 mail x",
            "<34>1 2026-11-22T05:27:23.123456+01:00 mail x",
            "<34>1 2026-11-22T05:27:23.123456+01:00 mail y",
            "<34>1 2026-11-22T05:27:23.123456+01:00: z",
            "2026-11-22T05:27:23+01 x",
            "2026-11-22T05:27:23+01 y",
            "2026-11-22T05:27:23+0130 y",
            "[17/Jun/2011 17:00:45] x",
            "[17/Jun/2011 17:00:45] x",
            "@400000004c91b044077a9e94 x",
            "@400000004c91b044077a9e94 x",
            "no stamp",
            "Mar  1 00:00:00 mail x",
        ];
        let nows = [at("2027-01-01T00:30:00Z"), at("2028-03-01T12:00:00Z")];
        let mut cached = TimeParser::with_time_zone(zurich());
        let mut fresh = TimeParser::with_time_zone(zurich());
        for (i, line) in lines.iter().cycle().take(lines.len() * 6).enumerate() {
            let now = nows[(i / 7) % 2];
            fresh.syslog_hour = None;
            assert_eq!(
                cached.parse(line, now),
                fresh.parse(line, now),
                "{i}: {line:?}"
            );
        }
    }

    #[test]
    fn journal_micros() {
        let ts = from_journal_micros(1_700_000_000_123_456).unwrap();
        assert_eq!(ts, at("2023-11-14T22:13:20.123456Z"));
    }

    #[test]
    fn rejects_non_stamps() {
        let mut p = TimeParser::with_time_zone(zurich());
        let now = Timestamp::UNIX_EPOCH;
        for line in [
            "",
            "warning: unknown[1.2.3.4]",
            "Dec 14 09:58:371 x",
            "Foo 14 09:58:37 x",
            "2026-13-01T00:00:00Z x",
            "Feb 30 10:00:00 x",
            "Dec 14 25:00:00 x",
        ] {
            assert!(p.parse(line, now).is_none(), "{line:?}");
        }
    }

    #[test]
    fn stamp_len_matches_parse() {
        let mut p = TimeParser::with_time_zone(zurich());
        let now = at("2026-11-22T00:00:00Z");
        for line in [
            "Dec 14 09:58:37 mail x",
            "Aug  4 16:47:52.123 mail x",
            "2026-11-22T05:27:23.123456+01:00 mail x",
            "<34>1 2026-11-22T05:27:23Z mail x",
            "[17/Jun/2011 17:00:45] x",
        ] {
            assert_eq!(stamp_len(line), p.parse(line, now).map(|x| x.1), "{line}");
        }
    }
}

//! Engine tests; the built-in filters are exercised against the fixtures
//! under tests/data/filters/ in fixtures.rs.
use super::*;
use std::net::IpAddr;

fn def(fail: &[&str]) -> FilterDef {
    FilterDef {
        name: Some("t".into()),
        failregex: fail.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn every_builtin_compiles() {
    for name in Filter::builtin_names() {
        let f = Filter::builtin_with_options(name, &BTreeMap::new());
        assert!(matches!(f, Ok(Some(_))), "{name}: {f:?}");
    }
    assert!(Filter::builtin("nope").is_none());
}

#[test]
fn host_forms_and_normalisation() {
    let f = Filter::compile(def(&[r"^from <HOST>(?::\d+)?$"])).unwrap();
    let host = |l: &str| match f.check(l) {
        LineMatch::Failure(h) => Some(h.host.to_string()),
        _ => None,
    };
    assert_eq!(host("from 192.0.2.1").as_deref(), Some("192.0.2.1"));
    assert_eq!(
        host("from unknown[192.0.2.1]").as_deref(),
        Some("192.0.2.1")
    );
    assert_eq!(
        host("from mail.example.net[192.0.2.1]:25").as_deref(),
        Some("192.0.2.1")
    );
    assert_eq!(
        host("from unknown[2001:DB8:0::1]").as_deref(),
        Some("2001:db8::1")
    );
    assert_eq!(
        host("from [::ffff:192.0.2.7]").as_deref(),
        Some("192.0.2.7")
    );
    assert_eq!(host("from 2001:db8::a").as_deref(), Some("2001:db8::a"));
    // Not addresses: no failure.
    assert_eq!(host("from 256.1.1.1"), None);
    assert_eq!(host("from unknown[1:2:3]"), None);
    assert_eq!(host("from mail.example.net"), None);
}

#[test]
fn captures_are_evidence_and_internal_groups_are_not() {
    let f = Filter::compile(def(&[
        r"^auth failed for <F-USER>\S+</F-USER> from <HOST>$",
    ]))
    .unwrap();
    let LineMatch::Failure(hit) = f.check("Nov 22 05:27:23 auth failed for bob from 192.0.2.9")
    else {
        panic!("no failure");
    };
    assert_eq!(hit.captures, vec![("user".to_string(), "bob".to_string())]);
    assert_eq!(hit.regex_index, 0);
}

#[test]
fn first_matching_failregex_wins_and_ignoreregex_applies() {
    let mut d = def(&[r"^a <HOST>$", r"^b <HOST>$"]);
    d.ignoreregex = vec![r"^b 192\.0\.2\.2$".into()];
    let f = Filter::compile(d).unwrap();
    assert!(matches!(
        f.check("b 192.0.2.3"),
        LineMatch::Failure(Hit { regex_index: 1, .. })
    ));
    assert_eq!(f.check("b 192.0.2.2"), LineMatch::Ignored);
    assert_eq!(f.check("c 192.0.2.3"), LineMatch::Missed);
}

#[test]
fn prefregex_header_and_wrapped_modes_agree() {
    // Header mode (content runs to the end) and wrapped mode (text after
    // the content) must find the same failures.
    let mut header = def(&[r"^fail from <HOST>$", r"bad <HOST>"]);
    header.prefregex = Some(r"^\s*\S+ prog\[\d+\]: <F-CONTENT>.+</F-CONTENT>$".into());
    let mut wrapped = header.clone();
    wrapped.prefregex = Some(r"^\s*\S+ prog\[\d+\]: <F-CONTENT>.+</F-CONTENT>(?:)$".into());
    let (h, w) = (
        Filter::compile(header).unwrap(),
        Filter::compile(wrapped).unwrap(),
    );
    assert!(h.header.is_some() && w.header.is_none());
    for (line, want) in [
        (
            "Nov 22 05:27:23 host prog[1]: fail from 192.0.2.1",
            Some("192.0.2.1"),
        ),
        (
            "Nov 22 05:27:23 host prog[1]: x bad 192.0.2.2 y",
            Some("192.0.2.2"),
        ),
        ("Nov 22 05:27:23 host prog[1]: x fail from 192.0.2.1", None),
        ("Nov 22 05:27:23 host other[1]: fail from 192.0.2.1", None),
    ] {
        for f in [&h, &w] {
            let got = match f.check(line) {
                LineMatch::Failure(hit) => Some(hit.host.to_string()),
                _ => None,
            };
            assert_eq!(got.as_deref(), want, "{line}");
        }
    }
}

#[test]
fn unsupported_constructs_are_config_errors_naming_filter_and_construct() {
    let mut d = def(&[r"^ok <HOST>$", r"^x(?!y) <HOST>$"]);
    d.name = Some("mine".into());
    let e = Filter::compile(d).unwrap_err().to_string();
    assert!(
        e.contains("mine") && e.contains("failregex[1]") && e.contains("look-ahead"),
        "{e}"
    );
    let e = Filter::compile(def(&[r"^(a)\1 <HOST>$"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("backreference"), "{e}");
    let e = Filter::compile(def(&[r"^no host here$"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no <HOST>"), "{e}");
    let e = Filter::compile(def(&[r"^(<HOST>$"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("failregex[0]"), "{e}");
}

#[test]
fn toml_file_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "failregex = ['^x <HOST>$']\nbogus = 1\n").unwrap();
    let e = Filter::from_toml_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.toml") && e.contains("bogus") && e.contains('2'),
        "{e}"
    );
    let p = dir.path().join("good.toml");
    std::fs::write(&p, "failregex = ['^x <HOST>$']\n").unwrap();
    let f = Filter::from_toml_file(&p).unwrap();
    assert_eq!(f.name(), "good");
    assert!(matches!(f.check("x 192.0.2.1"), LineMatch::Failure(_)));
}

#[test]
fn options_can_be_overridden() {
    let mut o = BTreeMap::new();
    o.insert("daemon".to_string(), r"postfix-custom/smtpd".to_string());
    let f = Filter::builtin_with_options("postfix-sasl", &o)
        .unwrap()
        .unwrap();
    let line = "Nov 22 05:27:23 mx postfix-custom/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x";
    assert!(matches!(f.check(line), LineMatch::Failure(_)));
    let f = Filter::builtin("postfix-sasl").unwrap();
    assert!(matches!(f.check(line), LineMatch::Failure(_)));
    let line = "Nov 22 05:27:23 mx custom/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x";
    assert_eq!(f.check(line), LineMatch::Missed);
}

/// One annotated fixture line.
struct Fixture {
    lineno: usize,
    expect: Expect,
    line: String,
}

enum Expect {
    Match {
        host: IpAddr,
        captures: Vec<(String, String)>,
    },
    Ignore,
    NoMatch,
}

fn fixtures(name: &str) -> Vec<Fixture> {
    let path = format!(
        "{}/tests/data/filters/{name}.log",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        let (head, line) = l
            .split_once(" | ")
            .unwrap_or_else(|| panic!("{path}:{}: no ' | '", i + 1));
        let mut words = head.split_whitespace();
        let expect = match words.next() {
            Some("MATCH") => {
                let host = words
                    .next()
                    .and_then(|h| h.parse().ok())
                    .unwrap_or_else(|| panic!("{path}:{}", i + 1));
                let captures = words
                    .map(|w| {
                        let (k, v) = w
                            .split_once('=')
                            .unwrap_or_else(|| panic!("{path}:{}: {w}", i + 1));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                Expect::Match { host, captures }
            }
            Some("IGNORE") => Expect::Ignore,
            Some("NOMATCH") => Expect::NoMatch,
            other => panic!("{path}:{}: bad annotation {other:?}", i + 1),
        };
        out.push(Fixture {
            lineno: i + 1,
            expect,
            line: line.to_string(),
        });
    }
    out
}

/// The address no crafted line may ever produce.
const FRAMED: &str = "203.0.113.9";

#[test]
fn builtin_filters_match_their_fixtures() {
    let mut failures = Vec::new();
    for name in Filter::builtin_names() {
        let f = Filter::builtin(name).unwrap();
        let fx = fixtures(name);
        assert!(
            fx.iter()
                .filter(|x| matches!(x.expect, Expect::Match { .. }))
                .count()
                >= 5,
            "{name}: too few MATCH fixtures"
        );
        assert!(
            fx.iter().any(|x| matches!(x.expect, Expect::NoMatch)),
            "{name}: no NOMATCH fixtures"
        );
        for x in fx {
            let got = f.check(&x.line);
            if let LineMatch::Failure(h) = &got {
                assert_ne!(h.host.to_string(), FRAMED, "{name}:{}: framed", x.lineno);
            }
            let ok = match (&x.expect, &got) {
                (Expect::Match { host, captures }, LineMatch::Failure(h)) => {
                    h.host == *host && captures.iter().all(|c| h.captures.contains(c))
                }
                (Expect::Ignore, LineMatch::Ignored) => true,
                (Expect::NoMatch, LineMatch::Missed | LineMatch::Ignored) => true,
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{name}.log:{}: got {got:?}\n    {}",
                    x.lineno, x.line
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every matching fixture, with attacker-style text put into each `<...>`
/// field, after each `=` and at the end: the filter may stop matching, but
/// it must never report the injected address.
#[test]
fn injected_addresses_never_become_the_host() {
    let payloads = [
        "unknown[203.0.113.9]",
        "x>, method=PLAIN, rip=203.0.113.9, lip=192.0.2.1",
        "a,203.0.113.9",
        "203.0.113.9",
        "[203.0.113.9]:25",
        " from unknown[203.0.113.9]",
        ", IP address 203.0.113.9",
        " rhost=203.0.113.9",
    ];
    let mut checked = 0;
    for name in Filter::builtin_names() {
        let f = Filter::builtin(name).unwrap();
        for x in fixtures(name) {
            let Expect::Match { host, .. } = x.expect else {
                continue;
            };
            let l = &x.line;
            let mut variants = Vec::new();
            for p in payloads {
                variants.push(format!("{l}{p}"));
                for (i, c) in l.char_indices() {
                    match c {
                        '<' => {
                            if let Some(end) = l[i..].find('>') {
                                variants.push(format!("{}<{p}{}", &l[..i], &l[i + end..]));
                            }
                        }
                        '=' => variants.push(format!("{}={p}{}", &l[..i], &l[i + 1..])),
                        _ => {}
                    }
                }
            }
            for v in variants {
                checked += 1;
                if let LineMatch::Failure(h) = f.check(&v) {
                    assert_eq!(
                        h.host, host,
                        "{name}.log:{}: injected line gave {}\n    {v}",
                        x.lineno, h.host
                    );
                }
            }
        }
    }
    assert!(checked > 500, "{checked}");
}

#[test]
fn more_than_64_rules_all_take_part() {
    let pats: Vec<String> = (0..70).map(|i| format!(r"^rule{i} from <HOST>$")).collect();
    let refs: Vec<&str> = pats.iter().map(String::as_str).collect();
    let f = Filter::compile(def(&refs)).unwrap();
    for i in [0usize, 5, 63, 64, 69] {
        let got = f.check(&format!("rule{i} from 192.0.2.{i}"));
        assert!(
            matches!(&got, LineMatch::Failure(h) if h.regex_index == i && h.host.to_string() == format!("192.0.2.{i}")),
            "{i}: {got:?}"
        );
    }
    assert_eq!(f.check("rule70 from 192.0.2.1"), LineMatch::Missed);
}

/// The whole-text scan finds the start of every line that can match, for
/// every kind of prefilter, and leaves out lines no rule can match.
#[test]
fn candidate_lines_cover_every_match() {
    let text = "Nov 22 05:27:23 a alpha 192.0.2.1\nNov 22 05:27:23 b nothing here\n\
                Nov 22 05:27:23 c beta 192.0.2.2 alpha\ngamma 192.0.2.3\ndelta 192.0.2.4\nlast alpha 192.0.2.5\n";
    let starts_of = |f: &Filter| {
        let mut v = Vec::new();
        f.candidate_lines(text, |s| v.push(s));
        v.sort_unstable();
        v.dedup();
        v.iter()
            .map(|&s| text[s..].lines().next().unwrap_or(""))
            .collect::<Vec<_>>()
    };
    let matching = |f: &Filter| {
        text.lines()
            .filter(|l| matches!(f.check(l), LineMatch::Failure(_)))
            .collect::<Vec<_>>()
    };
    let cases: [&[&str]; 4] = [
        &[r"alpha <HOST>"],
        &[r"alpha <HOST>", r"beta <HOST>"],
        &[
            r"alpha <HOST>",
            r"beta <HOST>",
            r"gamma <HOST>",
            r"delta <HOST>",
        ],
        &[r"<HOST>$"],
    ];
    for pats in cases {
        let f = Filter::compile(def(pats)).unwrap();
        let cands = starts_of(&f);
        for m in matching(&f) {
            assert!(
                cands.contains(&m),
                "{pats:?}: {m:?} not a candidate: {cands:?}"
            );
        }
        if pats.len() < 4 && pats[0] != r"<HOST>$" {
            assert!(
                !cands.iter().any(|l| l.contains("nothing")),
                "{pats:?}: {cands:?}"
            );
        }
    }
    let f = Filter::compile(def(&[r"alpha <HOST>"])).unwrap();
    assert_eq!(
        starts_of(&f),
        [
            "Nov 22 05:27:23 a alpha 192.0.2.1",
            "Nov 22 05:27:23 c beta 192.0.2.2 alpha",
            "last alpha 192.0.2.5"
        ]
    );
}

/// The sequence matcher and the header DFAs give the same failures, hosts
/// and evidence as the regex crate: every built-in filter on its fixture lines, every prefix of
/// them, the lines with bytes swapped for ones that change the parse, and
/// fail2ban's sample logs when ../shared is there.
#[test]
fn sequence_matcher_and_header_dfa_agree_with_the_regexes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/filters");
    let mut lines: Vec<String> = Vec::new();
    for name in Filter::builtin_names() {
        let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
        lines.extend(
            text.lines()
                .filter_map(|l| l.split_once(" | "))
                .map(|l| l.1.to_string()),
        );
    }
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fail2ban-corpus/fail2ban/logs");
    for f in ["postfix", "dovecot", "kerio"] {
        if let Ok(t) = std::fs::read_to_string(corpus.join(f)) {
            lines.extend(t.lines().filter(|l| !l.starts_with('#')).map(String::from));
        }
    }
    let mut variants = Vec::new();
    for l in &lines {
        for cut in 0..=l.len() {
            if l.is_char_boundary(cut) {
                variants.push(l[..cut].to_string());
            }
        }
        for (i, _) in l.char_indices().filter(|(i, _)| i % 3 == 0) {
            for b in [" ", ":", "[", "]", "1", "a", "-"] {
                let mut v = l.clone();
                let end = i + l[i..].chars().next().map_or(0, char::len_utf8);
                v.replace_range(i..end, b);
                variants.push(v);
            }
        }
    }
    let (mut with_seq, mut with_dfa) = (0, 0);
    for name in Filter::builtin_names() {
        let fast = Filter::builtin(name).unwrap();
        with_seq += fast.rules.iter().filter(|r| r.seq.is_some()).count();
        with_dfa += usize::from(fast.header.as_ref().is_some_and(|h| h.has_dfa()));
        let slow = Filter::builtin(name).unwrap().regex_only();
        for v in &variants {
            assert_eq!(fast.check(v), slow.check(v), "{name}: {v:?}");
        }
    }
    assert!(
        with_seq >= 6,
        "most built-in failregexes should be sequences: {with_seq}"
    );
    assert!(
        with_dfa >= 4,
        "the postfix headers should have their DFA: {with_dfa}"
    );
}

/// The dotted-quad shortcut of the host parse never disagrees with the
/// standard library's parse: random strings of digits and separators, and
/// the edge cases by hand.
#[test]
fn dotted_quad_agrees_with_std() {
    let std_v4 = |s: &[u8]| {
        std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.parse::<std::net::Ipv4Addr>().ok())
    };
    let mut cases: Vec<Vec<u8>> = [
        "0.0.0.0",
        "255.255.255.255",
        "256.1.1.1",
        "01.1.1.1",
        "1.1.1.00",
        "1.1.1",
        "1.1.1.1.",
        ".1.1.1",
        "1..1.1",
        "1.1.1.1.1",
        "1000.1.1.1",
        "1.1.1.1 ",
        "+1.1.1.1",
        "1.1.1.0x1",
        "",
        "192.0.2.1",
        "9.99.199.249",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let mut next = crate::testrng::below(0x9e37_79b9_7f4a_7c15_u64);
    for _ in 0..200_000 {
        // Mostly address-like: 3 to 5 parts of 0 to 4 digits, dots between
        // them, now and then another separator.
        let mut c = Vec::new();
        for k in 0..3 + next(3) {
            if k > 0 {
                c.push(if next(12) == 0 {
                    b"%:x "[next(4) as usize]
                } else {
                    b'.'
                });
            }
            for _ in 0..next(5) {
                c.push(b"0123456789"[next(10) as usize]);
            }
        }
        cases.push(c);
    }
    let mut some = 0;
    for c in &cases {
        let fast = dotted_quad(c);
        if fast.is_some() {
            some += 1;
            assert_eq!(fast, std_v4(c), "{:?}", String::from_utf8_lossy(c));
        }
        // With the full parse behind it, the host parse is what it was.
        let full = std::str::from_utf8(c).ok().and_then(|s| {
            let s = s.split('%').next().unwrap_or(s);
            s.parse::<IpAddr>().ok().map(|a| a.to_canonical())
        });
        assert_eq!(parse_host(c), full, "{:?}", String::from_utf8_lossy(c));
    }
    assert!(some > 1000, "{some}");
}

/// fail2ban's own postfix filter compiles into a `Filter` that answers the
/// match stage's calls: on whole lines, on the text after a cut stamp, and
/// on the lines its literal prefilter picks out of a chunk.
#[test]
fn fail2ban_filter_answers_the_match_stage_calls() {
    use crate::fail2ban::{filterconf::FilterReader, ini::Vars};
    let stock = std::path::Path::new("/etc/fail2ban");
    assert!(
        stock.join("filter.d/postfix.conf").is_file(),
        "/etc/fail2ban/filter.d/postfix.conf is missing: install Debian's fail2ban package"
    );
    let spec = FilterReader::open(stock, "postfix", vec![("mode".into(), "aggressive".into())])
        .unwrap()
        .resolve(&Vars::new(), "auto")
        .unwrap();
    let f = Filter::from_fail2ban("postfix", &spec, None).unwrap();
    assert!(f.fail2ban().unwrap().backtracking_patterns() > 0);
    let lines = [
        (
            "Nov 10 00:00:01 mx postfix/smtpd[1]: warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
            Some("192.0.2.7"),
        ),
        (
            "Nov 10 00:00:02 mx postfix/smtpd[1]: warning: unknown[192.0.2.8]: SASL LOGIN authentication failed: Connection lost to authentication server",
            None,
        ),
        (
            "Nov 10 00:00:03 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[2001:db8::5]: 554 5.7.1 <x@example.com>: Relay access denied; from=<a@b> to=<x@example.com> proto=ESMTP helo=<h>",
            Some("2001:db8::5"),
        ),
        (
            "Nov 10 00:00:04 mx postfix/smtpd[1]: connect from unknown[192.0.2.9]",
            None,
        ),
        (
            "Nov 10 00:00:05 mx postfix/smtpd[1]: warning: unknown[192.0.2.10]: SASL PLAIN authentication failed: x, sasl_username=bob",
            Some("192.0.2.10"),
        ),
    ];
    let mut text = String::new();
    for (line, want) in &lines {
        let host = |m: LineMatch| match m {
            LineMatch::Failure(h) => Some(h.host.to_string()),
            _ => None,
        };
        assert_eq!(host(f.check_host(line)).as_deref(), *want, "{line}");
        let msg = &line[crate::timestamp::stamp_len(line).unwrap()..];
        assert_eq!(host(f.check_message_host(msg)).as_deref(), *want, "{line}");
        text.push_str(line);
        text.push('\n');
    }
    let mut picked = Vec::new();
    f.candidate_lines(&text, |s| picked.push(s));
    let starts: Vec<usize> = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain([0])
        .collect();
    for (line, want) in &lines {
        let at = text.find(line).unwrap();
        if want.is_some() {
            assert!(picked.contains(&at) && starts.contains(&at), "{line}");
        }
    }
    match f.check(lines[4].0) {
        LineMatch::Failure(h) => assert_eq!(h.regex_index, 0),
        m => panic!("{m:?}"),
    }
}

/// The colon-hex shortcut of the IPv6 host parse never disagrees with the
/// standard library's parse: random strings of hex digits and colons (most
/// around one `::`), and the edge cases by hand.
#[test]
fn colon_hex_agrees_with_std() {
    let std_v6 = |s: &[u8]| {
        std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.parse::<std::net::Ipv6Addr>().ok())
    };
    let mut cases: Vec<Vec<u8>> = [
        "::",
        ":::",
        "::1",
        "1::",
        "1:",
        ":1",
        ":1::2",
        "1::2::3",
        "1:::2",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8::",
        "::1:2:3:4:5:6:7:8",
        "1:2:3:4::5:6:7:8",
        "00001::",
        "0001::",
        "fFfF::aBcD",
        "2001:db8::1",
        "2001:db8:0:0:0:0:0:1",
        "::ffff:102:304",
        "::ffff:1.2.3.4",
        "1::2%eth0",
        "g::1",
        "",
        ":",
        "1:2:3:4:5:6:7",
        "12345::",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let mut next = crate::testrng::below(0x2545_f491_4f6c_dd1d_u64);
    for _ in 0..300_000 {
        let mut c = Vec::new();
        let groups = next(10);
        let gap = next(groups + 2);
        for k in 0..groups {
            if k > 0 || next(8) == 0 {
                c.push(b':');
            }
            if k == gap || next(40) == 0 {
                c.push(b':');
            }
            for _ in 0..next(6) {
                c.push(b"0123456789abcdefABCDEF"[next(22) as usize]);
            }
        }
        if next(6) == 0 {
            c.push(b':');
        }
        cases.push(c);
    }
    let mut some = 0;
    for c in &cases {
        let fast = colon_hex(c);
        if fast.is_some() {
            some += 1;
        }
        assert_eq!(
            fast.is_some().then(|| std_v6(c)).flatten(),
            fast,
            "{:?}",
            String::from_utf8_lossy(c)
        );
        if std_v6(c).is_some() && !c.contains(&b'.') && !c.contains(&b'%') {
            assert_eq!(fast, std_v6(c), "{:?}", String::from_utf8_lossy(c));
        }
        let full = std::str::from_utf8(c).ok().and_then(|s| {
            let s = s.split('%').next().unwrap_or(s);
            s.parse::<IpAddr>().ok().map(|a| a.to_canonical())
        });
        assert_eq!(parse_host(c), full, "{:?}", String::from_utf8_lossy(c));
    }
    assert!(some > 10_000, "{some}");
}

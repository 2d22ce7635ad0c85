//! Scraping an agent's `/metrics` from inside its namespace, and reading
//! the OpenMetrics text back: what the metrics and dashboard tests share.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::Netns;

/// A port for a server inside a test's own namespace.
pub fn random_port() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    20_000 + u16::from_ne_bytes(b) % 40_000
}

/// `GET path` on `addr` from inside `ns`; the body of a 200 answer.
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> Result<String> {
    let path = path.to_string();
    let answer = ns.run(move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP head in {answer:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {addr}{}: {head}", "");
    }
    Ok(body.to_string())
}

/// One sample line: `name{k="v",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
    /// `# TYPE` lines: family name -> type.
    pub families: BTreeMap<String, String>,
}

impl Scrape {
    pub fn parse(text: &str) -> Result<Scrape> {
        let mut samples = Vec::new();
        let mut families = BTreeMap::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                if let Some((name, ty)) = t.split_once(' ') {
                    families.insert(name.to_string(), ty.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("no value in {line:?}"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .with_context(|| format!("bad value in {line:?}"))?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))?),
                None => (series, BTreeMap::new()),
            };
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        if !text.trim_end().ends_with("# EOF") {
            bail!("the scrape does not end with # EOF:\n{text}");
        }
        Ok(Scrape {
            text: text.to_string(),
            samples,
            families,
        })
    }

    /// Every name a query can use: each sample's, and those of every
    /// family declared (a counter's `_total`, a histogram's `_bucket`,
    /// `_sum` and `_count`), samples or not yet.
    pub fn names(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.samples.iter().map(|s| s.name.clone()).collect();
        for (f, ty) in &self.families {
            match ty.as_str() {
                "counter" => {
                    out.insert(format!("{f}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{f}{s}"));
                    }
                }
                _ => {
                    out.insert(f.clone());
                }
            }
        }
        out
    }

    /// The sum of the samples of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Whether some sample of `name` has these labels.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest
            .split_once("=\"")
            .with_context(|| format!("bad labels {s:?}"))?;
        let mut v = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        v.push(match n {
                            'n' => '\n',
                            o => o,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => v.push(c),
            }
        }
        let end = end.with_context(|| format!("unterminated label in {s:?}"))?;
        out.insert(k.trim_start_matches(',').to_string(), v);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Ok(out)
}

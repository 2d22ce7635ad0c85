//! The `[crowdsec]` section: the Local API to pull decisions from (with a
//! bouncer key) and to push jail bans to (with a machine login). Keys and
//! files are read and checked when the configuration loads, so
//! `check-config` names a missing key file or a bad credentials file with
//! file:line:key, and a configuration that loads can reach the LAPI.
use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::Cx;
use crate::{
    addr,
    crowdsec::{Credentials, Secret, credentials::header_safe},
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCrowdSec {
    url: Option<Spanned<String>>,
    api_key: Option<Spanned<String>>,
    api_key_file: Option<Spanned<String>>,
    credentials_file: Option<Spanned<String>>,
    poll: Option<Spanned<String>>,
    scopes: Option<Spanned<Vec<Spanned<String>>>>,
    origins: Option<Spanned<Vec<Spanned<String>>>>,
    scenarios_containing: Option<Spanned<Vec<Spanned<String>>>>,
    scenarios_not_containing: Option<Spanned<Vec<Spanned<String>>>>,
    ca_file: Option<Spanned<String>>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
}

/// The validated section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrowdSecConfig {
    /// The LAPI's base URL, ending in `/`.
    pub url: String,
    /// The bouncer key (or, with none, the client certificate of `tls`).
    pub api_key: Option<Secret>,
    /// The machine login: jail bans are pushed only with one.
    pub credentials: Option<Credentials>,
    pub poll: Duration,
    pub filters: Filters,
    pub tls: Tls,
}

impl CrowdSecConfig {
    /// Decisions are pulled: with a bouncer key, or a client certificate
    /// (LAPI's TLS authentication of bouncers).
    pub fn pulls(&self) -> bool {
        self.api_key.is_some() || self.tls.cert_file.is_some()
    }
}

/// Which decisions to pull (the LAPI filters them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filters {
    /// Lower-case: `ip`, `range`.
    pub scopes: Vec<String>,
    pub origins: Vec<String>,
    pub scenarios_containing: Vec<String>,
    pub scenarios_not_containing: Vec<String>,
}

/// Files for TLS: a CA to trust besides the public ones, and a client
/// certificate with its key: LAPI's TLS authentication of the bouncer
/// (instead of its key; the machine logs in with its password).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

const DEFAULT_POLL: Duration = Duration::from_secs(10);
const MIN_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(3600);
/// Key and credentials files are small; a bigger one is not one.
const MAX_KEY_FILE: u64 = 64 * 1024;

impl Cx<'_> {
    pub(super) fn crowdsec(&mut self, raw: &Spanned<RawCrowdSec>) -> Option<CrowdSecConfig> {
        let before = self.problems.len();
        let r = raw.get_ref();
        let api_key = match (&r.api_key, &r.api_key_file) {
            (Some(k), Some(_)) => {
                self.problem_at(
                    k.span(),
                    "crowdsec.api_key",
                    "give api_key or api_key_file, not both".into(),
                );
                None
            }
            (Some(k), None) => self.key(k.get_ref(), k.span(), "crowdsec.api_key"),
            (None, Some(f)) => self
                .small_file(f, "crowdsec.api_key_file")
                .and_then(|t| self.key(&t, f.span(), "crowdsec.api_key_file")),
            (None, None) => None,
        };
        let credentials = r.credentials_file.as_ref().and_then(|f| {
            let text = self.small_file(f, "crowdsec.credentials_file")?;
            match Credentials::parse(&text) {
                Ok(c) => Some(c),
                Err(e) => {
                    let path = self.path(f.get_ref());
                    self.problem_at(
                        f.span(),
                        "crowdsec.credentials_file",
                        format!("{}: {e}", path.display()),
                    );
                    None
                }
            }
        });
        if r.api_key.is_none()
            && r.api_key_file.is_none()
            && r.cert_file.is_none()
            && r.credentials_file.is_none()
        {
            self.problem_at(
                raw.span(),
                "crowdsec",
                "needs api_key or api_key_file (or a client certificate: cert_file and key_file) to pull decisions, \
                 and/or credentials_file to push jail bans"
                    .into(),
            );
        }
        let url = match (&r.url, credentials.as_ref().and_then(|c| c.url.clone())) {
            (Some(u), _) => self.url(u.get_ref(), u.span(), "crowdsec.url"),
            (None, Some(u)) => r
                .credentials_file
                .as_ref()
                .and_then(|f| self.url(&u, f.span(), "crowdsec.credentials_file")),
            (None, None) => {
                self.problem_at(
                    raw.span(),
                    "crowdsec.url",
                    "the Local API's URL is needed (e.g. \"http://127.0.0.1:8080/\")".into(),
                );
                None
            }
        };
        let poll = match &r.poll {
            Some(p) => match addr::parse_ban_length(p.get_ref()) {
                Ok(Some(d)) if (MIN_POLL..=MAX_POLL).contains(&d) => d,
                Ok(_) => {
                    self.problem_at(
                        p.span(),
                        "crowdsec.poll",
                        "must be between 100ms and 1h".into(),
                    );
                    DEFAULT_POLL
                }
                Err(e) => {
                    self.problem_at(p.span(), "crowdsec.poll", e.to_string());
                    DEFAULT_POLL
                }
            },
            None => DEFAULT_POLL,
        };
        let mut scopes = Vec::new();
        if let Some(list) = &r.scopes {
            if list.get_ref().is_empty() {
                self.problem_at(list.span(), "crowdsec.scopes", "empty list".into());
            }
            for (i, s) in list.get_ref().iter().enumerate() {
                let v = s.get_ref().to_ascii_lowercase();
                if v == "ip" || v == "range" {
                    if !scopes.contains(&v) {
                        scopes.push(v);
                    }
                } else {
                    self.problem_at(
                        s.span(),
                        &format!("crowdsec.scopes[{i}]"),
                        format!(
                            "`{}`: the XDP program enforces Ip and Range decisions only",
                            s.get_ref().escape_default()
                        ),
                    );
                }
            }
        } else {
            scopes = vec!["ip".into(), "range".into()];
        }
        let filters = Filters {
            scopes,
            origins: self.words(r.origins.as_ref(), "crowdsec.origins"),
            scenarios_containing: self.words(
                r.scenarios_containing.as_ref(),
                "crowdsec.scenarios_containing",
            ),
            scenarios_not_containing: self.words(
                r.scenarios_not_containing.as_ref(),
                "crowdsec.scenarios_not_containing",
            ),
        };
        let file = |cx: &mut Self, f: &Option<Spanned<String>>, key: &str| {
            let f = f.as_ref()?;
            let p = cx.path(f.get_ref());
            if let Err(e) = std::fs::File::open(&p) {
                cx.problem_at(f.span(), key, format!("{}: {e}", p.display()));
            }
            Some(p)
        };
        let tls = Tls {
            ca_file: file(self, &r.ca_file, "crowdsec.ca_file"),
            cert_file: file(self, &r.cert_file, "crowdsec.cert_file"),
            key_file: file(self, &r.key_file, "crowdsec.key_file"),
        };
        match (&r.cert_file, &r.key_file) {
            (Some(c), None) => self.problem_at(
                c.span(),
                "crowdsec.cert_file",
                "a client certificate needs its key_file".into(),
            ),
            (None, Some(k)) => self.problem_at(
                k.span(),
                "crowdsec.key_file",
                "a client key needs its cert_file".into(),
            ),
            _ => {}
        }
        if let Some(u) = &url
            && u.starts_with("http://")
            && let Some(f) = r.ca_file.as_ref().or(r.cert_file.as_ref())
        {
            self.problem_at(
                f.span(),
                "crowdsec.url",
                format!("TLS files are given, but {u} is not https"),
            );
        }
        if self.problems.len() > before {
            return None;
        }
        Some(CrowdSecConfig {
            url: url?,
            api_key,
            credentials,
            poll,
            filters,
            tls,
        })
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn small_file(&mut self, f: &Spanned<String>, key: &str) -> Option<String> {
        let p = self.path(f.get_ref());
        let read = std::fs::File::open(&p).and_then(|file| {
            use std::io::Read;
            let mut s = String::new();
            file.take(MAX_KEY_FILE + 1).read_to_string(&mut s)?;
            Ok(s)
        });
        match read {
            Ok(s) if s.len() as u64 > MAX_KEY_FILE => {
                self.problem_at(
                    f.span(),
                    key,
                    format!("{}: larger than {MAX_KEY_FILE} bytes", p.display()),
                );
                None
            }
            Ok(s) => Some(s),
            Err(e) => {
                self.problem_at(f.span(), key, format!("{}: {e}", p.display()));
                None
            }
        }
    }

    fn key(&mut self, k: &str, span: std::ops::Range<usize>, key: &str) -> Option<Secret> {
        let k = k.trim();
        if header_safe(k) {
            Some(Secret::new(k.to_owned()))
        } else {
            self.problem_at(
                span,
                key,
                "the API key is empty or has spaces or control characters".into(),
            );
            None
        }
    }

    fn url(&mut self, u: &str, span: std::ops::Range<usize>, key: &str) -> Option<String> {
        match reqwest::Url::parse(u.trim()) {
            Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {
                if p.query().is_some() || p.fragment().is_some() {
                    self.problem_at(span, key, format!("`{u}` has a query or fragment"));
                    return None;
                }
                let mut s = p.to_string();
                if !s.ends_with('/') {
                    s.push('/');
                }
                Some(s)
            }
            Ok(_) => {
                self.problem_at(span, key, format!("`{u}` is not an http(s) URL"));
                None
            }
            Err(e) => {
                self.problem_at(span, key, format!("`{}`: {e}", u.escape_default()));
                None
            }
        }
    }

    fn words(&mut self, v: Option<&Spanned<Vec<Spanned<String>>>>, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, s) in v
            .map(|l| l.get_ref().as_slice())
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let w = s.get_ref();
            if w.is_empty() || w.contains(',') || w.chars().any(char::is_control) {
                self.problem_at(
                    s.span(),
                    &format!("{key}[{i}]"),
                    "must be non-empty, without commas or control characters".into(),
                );
            } else {
                out.push(w.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, parse};

    fn problems(text: &str, dir: &Path) -> Vec<String> {
        match parse(text, "f.toml", dir) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn a_section_that_loads_has_its_keys_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), "abc123\n").unwrap();
        std::fs::write(
            dir.path().join("m.yaml"),
            "url: http://192.0.2.9:8080\nlogin: mx1\npassword: pw\n",
        )
        .unwrap();
        let cfg = parse(
            "[crowdsec]\napi_key_file = \"k\"\ncredentials_file = \"m.yaml\"\npoll = \"2s\"\n\
             scopes = [\"IP\"]\norigins = [\"cscli\", \"CAPI\"]\n",
            "f.toml",
            dir.path(),
        )
        .unwrap();
        let c = cfg.crowdsec.unwrap();
        // The URL from the credentials file, with its trailing slash.
        assert_eq!(c.url, "http://192.0.2.9:8080/");
        assert_eq!(c.api_key.unwrap().expose(), "abc123");
        assert_eq!(c.credentials.unwrap().login, "mx1");
        assert_eq!(c.poll, std::time::Duration::from_secs(2));
        assert_eq!(c.filters.scopes, ["ip"]);
        assert_eq!(c.filters.origins, ["cscli", "CAPI"]);
        // No section, no CrowdSec.
        assert!(parse("", "f.toml", dir.path()).unwrap().crowdsec.is_none());
    }

    #[test]
    fn problems_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "login: x\n").unwrap();
        let p = problems(
            "[crowdsec]\nurl = \"lapi:8080\"\napi_key = \"a b\"\ncredentials_file = \"bad.yaml\"\n\
             poll = \"2h\"\norigins = [\"a,b\"]\ncert_file = \"bad.yaml\"\n",
            dir.path(),
        );
        let want = [
            "f.toml:2:crowdsec.url",
            "f.toml:3:crowdsec.api_key",
            "f.toml:4:crowdsec.credentials_file: ",
            "f.toml:5:crowdsec.poll",
            "f.toml:6:crowdsec.origins[0]",
            "f.toml:7:crowdsec.cert_file: a client certificate needs its key_file",
        ];
        for w in want {
            assert!(p.iter().any(|x| x.starts_with(w)), "{w} in {p:#?}");
        }
        let p = problems("[crowdsec]\nurl = \"http://192.0.2.9/\"\n", dir.path());
        assert!(p[0].contains("needs api_key"), "{p:?}");
        let p = problems(
            "[crowdsec]\nurl = \"http://192.0.2.9/\"\napi_key = \"k\"\napi_key_file = \"k\"\n",
            dir.path(),
        );
        assert!(p[0].contains("not both"), "{p:?}");
        let p = problems("[crowdsec]\napi_key = \"k\"\nnope = 1\n", dir.path());
        assert!(p[0].contains("f.toml:3"), "{p:?}");
    }
}

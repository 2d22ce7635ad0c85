//! A filter.d file read as fail2ban's `FilterReader` reads it: the
//! `[Definition]` keys fail2ban uses, `[Init]` defaults for the options a
//! jail may pass (`postfix[mode=aggressive]`), the jail's own options as
//! interpolation values, `logtype` from the backend, then the recursive
//! `<tag>` substitution that picks the mode tables (`<mdre-<mode>>`).
use std::path::{Path, PathBuf};

use super::{
    ini::{Config, IniError, Lookup, Origin, Vars},
    tags::{self, TagError},
};

/// The `[Definition]` keys fail2ban takes from a filter.
const CONFIG_OPTS: &[&str] = &[
    "usedns",
    "prefregex",
    "ignoreregex",
    "failregex",
    "maxlines",
    "datepattern",
    "journalmatch",
];

#[derive(Debug, thiserror::Error)]
pub enum FilterConfError {
    #[error("no filter file {}.conf (nor .local)", .0.display())]
    NotFound(PathBuf),
    #[error(transparent)]
    Ini(#[from] IniError),
    #[error("filter {filter}: {source}")]
    Tags {
        filter: String,
        #[source]
        source: TagError,
    },
}

/// One regex of a filter and where its key was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub text: String,
    /// The file and line of this regex when it can be told (the key's
    /// line plus its place in a multi-line value), else the key's.
    pub origin: Option<Origin>,
}

/// A filter with every option resolved, as fail2ban hands it to its server.
#[derive(Debug, Clone)]
pub struct FilterFile {
    pub name: String,
    pub path: PathBuf,
    pub prefregex: Option<Pattern>,
    pub failregex: Vec<Pattern>,
    pub ignoreregex: Vec<Pattern>,
    /// `None`: fail2ban's default date templates.
    pub datepattern: Option<String>,
    pub maxlines: usize,
    /// Each line of `journalmatch`, split like a shell would.
    pub journalmatch: Vec<Vec<String>>,
    pub usedns: Option<String>,
    /// Every option after substitution (a jail sees them as `known/...`).
    pub combined: Vec<(String, String)>,
    /// Problems fail2ban only logs (a `maxlines` that is not a number, ...).
    pub warnings: Vec<String>,
    pub missing_includes: Vec<(PathBuf, Origin)>,
}

/// fail2ban's `FilterReader` over one filter.
pub struct FilterReader {
    name: String,
    path: PathBuf,
    cfg: Config,
    init: Vec<(String, String)>,
    p_opts: Vars,
    opts: Vec<(String, String)>,
    cache: std::collections::HashMap<String, Option<String>>,
    warnings: Vec<String>,
}

impl FilterReader {
    /// `filter.d/NAME` under `basedir` (`.conf`, `.d/`, `.local`), with the
    /// options a jail passed.
    pub fn open(
        basedir: &Path,
        name: &str,
        init: Vec<(String, String)>,
    ) -> Result<Self, FilterConfError> {
        let base = basedir.join("filter.d").join(name);
        let cfg =
            Config::read_base(&base)?.ok_or_else(|| FilterConfError::NotFound(base.clone()))?;
        Ok(Self::with(cfg, name, base.with_extension("conf"), init))
    }

    /// A filter file given by path, as `fail2ban-regex` takes one: inside a
    /// `filter.d` directory it is read with its `.local` and `.d/`, elsewhere
    /// alone (with its includes).
    pub fn open_file(path: &Path, init: Vec<(String, String)>) -> Result<Self, FilterConfError> {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let in_filter_d = path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "filter.d");
        let cfg = if in_filter_d {
            let base = path.with_file_name(&stem);
            Config::read_base(&base)?
        } else if path.is_file() {
            Some(Config::read_files(&[path.to_path_buf()])?)
        } else {
            None
        };
        let cfg = cfg.ok_or_else(|| FilterConfError::NotFound(path.with_extension("")))?;
        Ok(Self::with(cfg, &stem, path.to_path_buf(), init))
    }

    fn with(cfg: Config, name: &str, path: PathBuf, init: Vec<(String, String)>) -> Self {
        FilterReader {
            name: name.to_string(),
            path,
            cfg,
            init,
            p_opts: Vars::new(),
            opts: Vec::new(),
            cache: Default::default(),
            warnings: Vec::new(),
        }
    }

    fn init_get(&self, k: &str) -> Option<&str> {
        self.init
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    fn init_set(&mut self, k: String, v: String) {
        match self.init.iter_mut().find(|(n, _)| *n == k) {
            Some(e) => e.1 = v,
            None => self.init.push((k, v)),
        }
    }

    /// `logtype` follows the backend unless the jail or the filter set it.
    pub fn apply_auto_options(&mut self, backend: &str) {
        let own = self
            .cfg
            .section("Definition")
            .is_some_and(|s| s.contains("logtype"));
        if self.init_get("logtype").is_none_or(str::is_empty) && !own {
            let lt = if backend.starts_with("systemd") {
                "journal"
            } else {
                "file"
            };
            self.init_set("logtype".into(), lt.into());
        }
    }

    /// fail2ban's `getOptions`: `p_opts` are the jail's options.
    pub fn get_options(&mut self, p_opts: &Vars, all: bool) -> Result<(), FilterConfError> {
        let mut p = p_opts.clone();
        for (k, v) in &self.init {
            p.insert(k.to_lowercase(), v.clone());
        }
        self.opts.clear();
        for &opt in CONFIG_OPTS {
            if p.contains_key(opt) {
                continue;
            }
            if let Lookup::Found(v) = self.cfg.get("Definition", opt, &p)? {
                self.opts.push((opt.to_string(), v));
            }
        }
        self.p_opts = p;
        self.cache.clear();
        if self.cfg.has_section("Init") {
            for opt in self.cfg.own_options("Init") {
                if opt == "__name__" {
                    continue;
                }
                let mut v = None;
                if !opt.starts_with("known/") {
                    let val = self
                        .cfg
                        .get("Init", &opt, &Vars::new())?
                        .found()
                        .unwrap_or_default();
                    self.init_set(format!("known/{opt}"), val.clone());
                    v = Some(val);
                }
                if self.init_get(&opt).is_none() {
                    let val = match v {
                        Some(v) => v,
                        None => self
                            .cfg
                            .get("Init", &opt, &Vars::new())?
                            .found()
                            .unwrap_or_default(),
                    };
                    self.init_set(opt, val);
                }
            }
        }
        if all && self.cfg.has_section("Definition") {
            for opt in self.cfg.options("Definition") {
                if opt == "__name__" || self.opts.iter().any(|(k, _)| *k == opt) {
                    continue;
                }
                if let Lookup::Found(v) = self.cfg.get("Definition", &opt, &Vars::new())? {
                    self.opts.push((opt, v));
                }
            }
        }
        Ok(())
    }

    /// The options after `<tag>` substitution (fail2ban's `getCombined`).
    pub fn combined(&mut self) -> Result<Vec<(String, String)>, FilterConfError> {
        let mut comb = self.opts.clone();
        for (k, v) in &self.init {
            match comb.iter_mut().find(|(n, _)| n == k) {
                Some(e) => e.1 = v.clone(),
                None => comb.push((k.clone(), v.clone())),
            }
        }
        let ignore: Vec<String> = comb
            .iter()
            .filter_map(|(k, _)| {
                let q = k.find('?')?;
                (q > 0).then(|| k[..q].to_string())
            })
            .collect();
        let mut err = None;
        let cfg = &self.cfg;
        let p_opts = &self.p_opts;
        let cache = &mut self.cache;
        let mut lookup = |name: &str| -> Option<String> {
            if let Some(v) = cache.get(name) {
                return v.clone();
            }
            let v = match cfg.get_ex("Definition", name, p_opts) {
                Ok(l) => l.found(),
                Err(e) => {
                    err.get_or_insert(e);
                    None
                }
            };
            cache.insert(name.to_string(), v.clone());
            v
        };
        let r = tags::substitute(&mut comb, &ignore, &mut lookup);
        if let Some(e) = err {
            return Err(e.into());
        }
        r.map_err(|source| FilterConfError::Tags {
            filter: self.name.clone(),
            source,
        })?;
        Ok(comb)
    }

    /// Reads the filter for a jail (or `fail2ban-regex`, with no jail
    /// options) and resolves it.
    pub fn resolve(
        mut self,
        jail_opts: &Vars,
        backend: &str,
    ) -> Result<FilterFile, FilterConfError> {
        self.apply_auto_options(backend);
        self.get_options(jail_opts, false)?;
        let comb = self.combined()?;
        Ok(self.finish(comb))
    }

    fn finish(mut self, comb: Vec<(String, String)>) -> FilterFile {
        let get = |k: &str| comb.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let patterns = |key: &str| -> Vec<Pattern> {
            let Some(v) = get(key) else { return Vec::new() };
            let origin = self.cfg.origin("Definition", key);
            // The line of each regex, when the value as written has them
            // one per line in the same order.
            let raw: Option<Vec<(usize, String)>> = self
                .cfg
                .section("Definition")
                .and_then(|s| s.get(key))
                .or_else(|| self.cfg.defaults().get(key))
                .map(|r| {
                    r.text
                        .split('\n')
                        .enumerate()
                        .filter(|(_, l)| !l.is_empty())
                        .map(|(i, l)| (i, l.to_string()))
                        .collect()
                });
            let lines: Vec<&str> = v.split('\n').filter(|l| !l.is_empty()).collect();
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let origin = match (&origin, &raw) {
                        (Some(o), Some(raw)) if raw.len() == lines.len() => Some(Origin {
                            file: o.file.clone(),
                            line: o.line + raw[i].0,
                        }),
                        (o, _) => o.clone(),
                    };
                    Pattern {
                        text: l.to_string(),
                        origin,
                    }
                })
                .collect()
        };
        let failregex = patterns("failregex");
        let ignoreregex = patterns("ignoreregex");
        let prefregex = get("prefregex")
            .filter(|p| !p.is_empty())
            .map(|text| Pattern {
                text,
                origin: self.cfg.origin("Definition", "prefregex"),
            });
        let maxlines = match get("maxlines") {
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    self.warnings.push(format!(
                        "maxlines = {v:?} is not a positive number; 1 is used"
                    ));
                    1
                }
            },
            None => 1,
        };
        let journalmatch = get("journalmatch")
            .map(|v| {
                v.split('\n')
                    .filter(|l| !l.trim().is_empty())
                    .map(shell_words)
                    .collect()
            })
            .unwrap_or_default();
        FilterFile {
            name: self.name.clone(),
            path: self.path.clone(),
            prefregex,
            failregex,
            ignoreregex,
            datepattern: get("datepattern"),
            maxlines,
            journalmatch,
            usedns: get("usedns"),
            combined: comb,
            warnings: std::mem::take(&mut self.warnings),
            missing_includes: self.cfg.missing.clone(),
        }
    }

    /// For a jail: read, resolve with the first options, and give the
    /// combined options to merge as `known/...` (fail2ban reads the jail's
    /// options a second time after that and resolves the filter again).
    pub fn known_for_jail(
        &mut self,
        first: &Vars,
        backend: &str,
    ) -> Result<Vec<(String, String)>, FilterConfError> {
        self.apply_auto_options(backend);
        self.get_options(first, true)?;
        self.combined()
    }

    /// The second pass for a jail, with all the jail's options.
    pub fn resolve_for_jail(mut self, jail_opts: &Vars) -> Result<FilterFile, FilterConfError> {
        self.get_options(jail_opts, false)?;
        let comb = self.combined()?;
        Ok(self.finish(comb))
    }
}

/// `shlex.split` for journal matches (quotes and backslashes).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut quote: Option<char> = None;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == '\\' => {
                if let Some(n) = it.next() {
                    cur.push(n);
                }
            }
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                any = true;
            }
            None if c == '\\' => {
                if let Some(n) = it.next() {
                    cur.push(n);
                    any = true;
                }
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fail2ban's stock filters as Debian installs them (CI installs the package).
    const STOCK: &str = "/etc/fail2ban";

    fn stock() -> &'static Path {
        let p = Path::new(STOCK);
        assert!(
            p.join("filter.d/postfix.conf").is_file(),
            "{STOCK}/filter.d/postfix.conf is missing: install Debian's fail2ban package"
        );
        p
    }

    #[test]
    fn postfix_modes_pick_their_tables() {
        let f = FilterReader::open(
            stock(),
            "postfix",
            vec![("mode".into(), "aggressive".into())],
        )
        .unwrap()
        .resolve(&Vars::new(), "auto")
        .unwrap();
        assert_eq!(f.failregex.len(), 3, "{:#?}", f.failregex);
        assert!(f.failregex[0].text.contains("SASL ((?i)LOGIN"));
        assert!(f.prefregex.as_ref().unwrap().text.contains("<F-CONTENT>"));
        assert!(!f.prefregex.as_ref().unwrap().text.contains("__prefix_line"));
        assert!(!f.failregex.iter().any(|p| p.text.contains("<mdre")));
        assert_eq!(f.datepattern.as_deref(), Some("{^LN-BEG}"));
        assert_eq!(f.journalmatch.len(), 1);
        let o = f.failregex[1].origin.as_ref().unwrap();
        assert!(o.file.ends_with("postfix.conf"));
        let more = FilterReader::open(stock(), "postfix", vec![])
            .unwrap()
            .resolve(&Vars::new(), "auto")
            .unwrap();
        assert_eq!(more.failregex.len(), 2);
        let journal = FilterReader::open(stock(), "sshd", vec![])
            .unwrap()
            .resolve(&Vars::new(), "systemd")
            .unwrap();
        assert!(
            journal
                .combined
                .iter()
                .any(|(k, v)| k == "logtype" && v == "journal")
        );
    }

    #[test]
    fn shell_words_split_like_shlex() {
        assert_eq!(
            shell_words("_SYSTEMD_UNIT=sshd.service + _COMM=\"a b\""),
            vec!["_SYSTEMD_UNIT=sshd.service", "+", "_COMM=a b"]
        );
    }
}

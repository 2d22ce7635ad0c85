//! The TOML configuration: jails (filters, sources, counting and ban rules),
//! the allowlist and limits. Loading builds everything a jail needs (filters
//! compiled, ports and networks parsed), so a configuration that loads is one
//! the agent can run; any problem is reported as `file:line:key: message`.
mod crowdsec;
mod hint;
mod locate;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::{
    addr::{self, IpNet, PortSet},
    ban::{JailName, PrefixLimits},
    enforcer::Capacities,
    filter::Filter,
    jail::{Increment, Rules},
    source::SourceSpec,
};

pub use crowdsec::{CrowdSecConfig, Filters as CrowdSecFilters, Tls as CrowdSecTls};

/// The built-in configuration, used without --config; it also documents every key.
pub const DEFAULT_TOML: &str = include_str!("default.toml");
/// How the built-in configuration is named in messages.
pub const DEFAULT_NAME: &str = "<built-in>";

const DEFAULT_MAX_HOSTS: usize = 1_000_000;
const DEFAULT_EVIDENCE_LINES: usize = 5;
const DEFAULT_INCREMENT_FACTOR: f64 = 2.0;
const DEFAULT_INCREMENT_MAX: Duration = Duration::from_secs(7 * 86_400);
/// Above this, one jail's host table alone could exhaust memory.
const MAX_MAX_HOSTS: i64 = 100_000_000;
/// Largest map size accepted: tables are allocated in full by the kernel.
const MAX_CAPACITY: u32 = 1 << 26;

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from ([`DEFAULT_NAME`] for the built-in one).
    pub origin: String,
    pub jails: Vec<JailConfig>,
    /// Networks no jail bans.
    pub allowlist: Vec<IpNet>,
    /// Map sizes used when the pinned maps are first created.
    pub capacity: Capacities,
    /// The broadest prefix a ban may cover; jails' prefixes are within it.
    pub limits: PrefixLimits,
    /// How long the ban history of a network is kept after its last ban
    /// (repeat offenders are recognised within it).
    pub history: Duration,
    /// `[crowdsec]`: the Local API to pull decisions from and push bans to.
    pub crowdsec: Option<CrowdSecConfig>,
    /// `[control] readonly_group`: its members may send read-only requests
    /// (status, list, explain) on the control socket. Read at start.
    pub readonly_group: Option<crate::control::ReadOnlyGroup>,
    /// `close_connections`: a ban also aborts the TCP connections it
    /// covers (see closer/). Read at start.
    pub close_connections: bool,
}

/// Default of `[state] history`.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(90 * 86_400);

impl Config {
    /// No jails, defaults everywhere (an agent before its configuration).
    pub fn empty() -> Self {
        Config {
            origin: String::new(),
            jails: Vec::new(),
            allowlist: Vec::new(),
            capacity: Capacities::default(),
            limits: PrefixLimits::default(),
            history: DEFAULT_HISTORY,
            crowdsec: None,
            readonly_group: None,
            close_connections: true,
        }
    }
}

/// One jail, ready to run.
#[derive(Clone)]
pub struct JailConfig {
    pub name: JailName,
    pub filters: Vec<Arc<Filter>>,
    /// Lines matching one of these are not failures, whatever the filters say.
    pub ignore: Vec<regex::Regex>,
    pub sources: Vec<SourceConf>,
    pub rules: Rules,
    pub ports: PortSet,
    /// The jail's own allowlist (the global one applies to every ban).
    pub allowlist: Vec<IpNet>,
}

impl fmt::Debug for JailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JailConfig")
            .field("name", &self.name)
            .field(
                "filters",
                &self
                    .filters
                    .iter()
                    .map(|x| x.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("ignore", &self.ignore)
            .field("sources", &self.sources)
            .field("rules", &self.rules)
            .field("ports", &self.ports)
            .field("allowlist", &self.allowlist)
            .finish()
    }
}

/// Where a jail reads lines. Jails naming the same source share one reader.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceConf {
    Files(Vec<String>),
    Journal {
        matches: Vec<String>,
        file: Option<PathBuf>,
    },
}

impl SourceConf {
    pub fn spec(&self, from_start: bool) -> SourceSpec {
        match self {
            SourceConf::Files(globs) => SourceSpec::Files {
                globs: globs.clone(),
                from_start,
            },
            SourceConf::Journal { matches, file } => SourceSpec::Journal {
                matches: matches.clone(),
                file: file.clone(),
            },
        }
    }
}

impl fmt::Display for SourceConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceConf::Files(g) => write!(f, "files:{}", g.join(",")),
            SourceConf::Journal { matches, file } => {
                write!(f, "journal")?;
                if let Some(p) = file {
                    write!(f, ":{}", p.display())?;
                }
                if !matches.is_empty() {
                    write!(f, "[{}]", matches.join(" "))?;
                }
                Ok(())
            }
        }
    }
}

/// One thing wrong in a configuration file, located for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.key, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read it", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// The file's structure; every value keeps its span so problems found after
/// parsing can still name their line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    allowlist: Vec<Spanned<String>>,
    max_hosts: Option<Spanned<i64>>,
    evidence_lines: Option<Spanned<i64>>,
    close_connections: Option<bool>,
    #[serde(default)]
    defaults: RawJail,
    #[serde(default)]
    jails: BTreeMap<String, Spanned<RawJail>>,
    capacity: Option<Spanned<Capacities>>,
    limits: Option<Spanned<RawLimits>>,
    state: Option<Spanned<RawState>>,
    crowdsec: Option<Spanned<crowdsec::RawCrowdSec>>,
    control: Option<Spanned<RawControl>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    readonly_group: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    history: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJail {
    enabled: Option<Spanned<bool>>,
    /// A name or path, or a list of them.
    filter: Option<Spanned<toml::Value>>,
    files: Option<Spanned<Vec<Spanned<String>>>>,
    files_any: Option<Spanned<Vec<Spanned<String>>>>,
    journal: Option<Spanned<Vec<Spanned<String>>>>,
    journal_file: Option<Spanned<String>>,
    maxretry: Option<Spanned<i64>>,
    findtime: Option<Spanned<String>>,
    bantime: Option<Spanned<String>>,
    /// "all", "smtp,submission", or a list of names and numbers.
    ports: Option<Spanned<toml::Value>>,
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    /// A table {factor, max} or a boolean.
    increment: Option<Spanned<toml::Value>>,
    ignoreregex: Option<Vec<Spanned<String>>>,
    allowlist: Option<Vec<Spanned<String>>>,
}

/// Loads a configuration file, or a fail2ban configuration directory
/// (`/etc/fail2ban`: its jails read as fail2ban reads them; what it does
/// differently is logged as warnings).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    if path.is_dir() {
        let (cfg, warnings) = crate::fail2ban::load_config(path)?;
        for w in &warnings {
            log::warn!("{w}");
        }
        return Ok(cfg);
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &path.display().to_string(), &dir)
}

/// The built-in configuration.
pub fn builtin() -> Result<Config, ConfigError> {
    parse(DEFAULT_TOML, DEFAULT_NAME, Path::new("/"))
}

/// `--config FILE` or the built-in configuration.
pub fn load_or_builtin(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => load(p),
        None => builtin(),
    }
}

/// Parses and validates `text`; `file` names it in problems and relative
/// filter paths are resolved against `dir`.
pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Config, ConfigError> {
    let mut cx = Cx {
        text,
        file,
        dir,
        problems: Vec::new(),
        filters: HashMap::new(),
    };
    let raw: RawFile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let key = locate::key_at(text, span.start)
                .or_else(|| locate::key_on_line(text, span.start))
                .unwrap_or_else(|| "(syntax)".to_string());
            cx.problem_at(span, &key, hint::did_you_mean(e.message().trim()));
            return Err(ConfigError::Invalid(cx.problems));
        }
    };
    let cfg = cx.build(raw);
    if cx.problems.is_empty() {
        Ok(cfg)
    } else {
        // A bad [defaults] value is found once per jail inheriting it.
        let mut p = cx.problems;
        p.sort_by(|a, b| (a.line, &a.key).cmp(&(b.line, &b.key)));
        p.dedup();
        Err(ConfigError::Invalid(p))
    }
}

/// What every jail inherits from the top of the file.
struct Common {
    max_hosts: usize,
    evidence_lines: usize,
    limits: PrefixLimits,
}

/// Validation context: collects every problem instead of stopping at the first.
struct Cx<'a> {
    text: &'a str,
    file: &'a str,
    dir: &'a Path,
    problems: Vec<Problem>,
    /// Filters compiled so far, shared between jails naming the same one.
    filters: HashMap<String, Arc<Filter>>,
}

impl Cx<'_> {
    fn problem_at(&mut self, span: std::ops::Range<usize>, key: &str, message: String) {
        let line = line_of(self.text, span.start);
        self.problems.push(Problem {
            file: self.file.to_string(),
            line,
            key: key.to_string(),
            message,
        });
    }

    fn build(&mut self, raw: RawFile) -> Config {
        let mut allowlist = Vec::new();
        for (i, a) in raw.allowlist.iter().enumerate() {
            match addr::parse_net(a.get_ref()) {
                Ok(n) => allowlist.push(n),
                Err(e) => self.problem_at(a.span(), &format!("allowlist[{i}]"), e.to_string()),
            }
        }
        let max_hosts = self
            .int_in(raw.max_hosts.as_ref(), "max_hosts", 1, MAX_MAX_HOSTS)
            .map_or(DEFAULT_MAX_HOSTS, |v| v as usize);
        let evidence_lines = self
            .int_in(raw.evidence_lines.as_ref(), "evidence_lines", 0, 100)
            .map_or(DEFAULT_EVIDENCE_LINES, |v| v as usize);
        // One setting for the guard's limit and the jails' prefixes: a jail
        // grouping hosts into a broader prefix than the guard takes would
        // never ban, so that is an error here, where it can be named.
        let defaults_limits = PrefixLimits::default();
        let limits = match &raw.limits {
            Some(l) => {
                let l = l.get_ref();
                PrefixLimits {
                    v4: self
                        .int_in(l.ipv4_prefix.as_ref(), "limits.ipv4_prefix", 1, 32)
                        .map_or(defaults_limits.v4, |v| v as u8),
                    v6: self
                        .int_in(l.ipv6_prefix.as_ref(), "limits.ipv6_prefix", 1, 128)
                        .map_or(defaults_limits.v6, |v| v as u8),
                }
            }
            None => defaults_limits,
        };
        let history = match raw
            .state
            .as_ref()
            .and_then(|s| s.get_ref().history.as_ref())
        {
            Some(h) => match addr::parse_ban_length(h.get_ref()) {
                Ok(Some(d)) => d,
                Ok(None) => Duration::MAX,
                Err(e) => {
                    self.problem_at(h.span(), "state.history", e.to_string());
                    DEFAULT_HISTORY
                }
            },
            None => DEFAULT_HISTORY,
        };
        let common = Common {
            max_hosts,
            evidence_lines,
            limits,
        };

        let mut jails = Vec::new();
        for (name, j) in &raw.jails {
            let key = format!("jails.{name}");
            let jname = match JailName::new(name) {
                Ok(n) => n,
                Err(e) => {
                    self.problem_at(j.span(), &key, e.to_string());
                    continue;
                }
            };
            if let Some(jc) = self.jail(jname, j, &raw.defaults, &common) {
                jails.push(jc);
            }
        }
        let capacity = match raw.capacity {
            Some(c) => {
                let span = c.span();
                let c = c.into_inner();
                for (key, n) in c.named() {
                    if !(1..=MAX_CAPACITY).contains(&n) {
                        self.problem_at(
                            span.clone(),
                            &format!("capacity.{key}"),
                            format!("must be between 1 and {MAX_CAPACITY}, not {n}"),
                        );
                    }
                }
                c
            }
            None => Capacities::default(),
        };
        let crowdsec = raw.crowdsec.as_ref().and_then(|c| self.crowdsec(c));
        let readonly_group = raw
            .control
            .as_ref()
            .and_then(|c| c.get_ref().readonly_group.as_ref())
            .and_then(|g| match group_named(g.get_ref()) {
                Ok(gid) => Some(crate::control::ReadOnlyGroup {
                    name: g.get_ref().clone(),
                    gid,
                }),
                Err(m) => {
                    self.problem_at(g.span(), "control.readonly_group", m);
                    None
                }
            });
        Config {
            origin: self.file.to_string(),
            jails,
            allowlist,
            capacity,
            limits,
            history,
            crowdsec,
            readonly_group,
            close_connections: raw.close_connections.unwrap_or(true),
        }
    }

    /// A jail's prefix length: no broader than the guard takes (`limit`).
    fn prefix_in(
        &mut self,
        v: &Spanned<i64>,
        key: &str,
        limit: u8,
        max: u8,
        limit_key: &str,
    ) -> Option<u8> {
        let n = *v.get_ref();
        if n < i64::from(limit) && n >= 0 {
            self.problem_at(
                v.span(),
                key,
                format!(
                    "/{n} is broader than {limit_key} (/{limit}): every ban of this jail would be refused; \
                     raise {limit_key} if you mean it"
                ),
            );
            return None;
        }
        self.int_in(Some(v), key, i64::from(limit), i64::from(max))
            .map(|x| x as u8)
    }

    fn int_in(&mut self, v: Option<&Spanned<i64>>, key: &str, lo: i64, hi: i64) -> Option<i64> {
        let v = v?;
        let n = *v.get_ref();
        if n < lo || n > hi {
            self.problem_at(
                v.span(),
                key,
                format!("must be between {lo} and {hi}, not {n}"),
            );
            return None;
        }
        Some(n)
    }

    fn jail(
        &mut self,
        name: JailName,
        raw: &Spanned<RawJail>,
        defaults: &RawJail,
        common: &Common,
    ) -> Option<JailConfig> {
        let Common {
            max_hosts,
            evidence_lines,
            limits,
            ..
        } = *common;
        let j = raw.get_ref();
        let jk = format!("jails.{name}");
        // A jail's key wins over [defaults]; problems name where the value was written.
        macro_rules! pick {
            ($f:ident) => {
                match (&j.$f, &defaults.$f) {
                    (Some(v), _) => Some((v, format!("{jk}.{}", stringify!($f)))),
                    (None, Some(v)) => Some((v, format!("defaults.{}", stringify!($f)))),
                    (None, None) => None,
                }
            };
        }
        if let Some((v, _)) = pick!(enabled)
            && !*v.get_ref()
        {
            return None;
        }
        let before = self.problems.len();

        let filters = match pick!(filter) {
            None => {
                self.problem_at(
                    raw.span(),
                    &format!("{jk}.filter"),
                    "a jail needs a filter".into(),
                );
                Vec::new()
            }
            Some((v, key)) => self.filters(v, &key),
        };

        let mut ignore = Vec::new();
        if let Some((v, key)) = pick!(ignoreregex) {
            for (i, r) in v.iter().enumerate() {
                match regex::RegexBuilder::new(r.get_ref())
                    .size_limit(1 << 20)
                    .build()
                {
                    Ok(re) => ignore.push(re),
                    Err(e) => self.problem_at(r.span(), &format!("{key}[{i}]"), e.to_string()),
                }
            }
        }

        let sources = self.sources(raw, j, defaults, &jk);

        let maxretry = match pick!(maxretry) {
            Some((v, key)) => self.int_in(Some(v), &key, 1, 1_000_000).unwrap_or(1) as u32,
            None => 5,
        };
        let findtime = match pick!(findtime) {
            Some((v, key)) => match addr::parse_ban_length(v.get_ref()) {
                Ok(Some(d)) => d,
                Ok(None) => {
                    self.problem_at(v.span(), &key, "findtime cannot be permanent".into());
                    Duration::ZERO
                }
                Err(e) => {
                    self.problem_at(v.span(), &key, e.to_string());
                    Duration::ZERO
                }
            },
            None => Duration::from_secs(600),
        };
        let bantime = match pick!(bantime) {
            Some((v, key)) => addr::parse_ban_length(v.get_ref()).unwrap_or_else(|e| {
                self.problem_at(v.span(), &key, e.to_string());
                None
            }),
            None => Some(Duration::from_secs(3600)),
        };
        let increment = match pick!(increment) {
            Some((v, key)) => self.increment(v, &key),
            None => None,
        };
        let ports = match pick!(ports) {
            Some((v, key)) => self.ports(v, &key),
            None => PortSet::all(),
        };
        let ipv4_prefix = match pick!(ipv4_prefix) {
            Some((v, key)) => self
                .prefix_in(v, &key, limits.v4, 32, "limits.ipv4_prefix")
                .unwrap_or(32),
            None => 32,
        };
        let ipv6_prefix = match pick!(ipv6_prefix) {
            Some((v, key)) => self
                .prefix_in(v, &key, limits.v6, 128, "limits.ipv6_prefix")
                .unwrap_or(64),
            None => 64.max(limits.v6),
        };
        let mut allowlist = Vec::new();
        if let Some((v, key)) = pick!(allowlist) {
            for (i, a) in v.iter().enumerate() {
                match addr::parse_net(a.get_ref()) {
                    Ok(n) => allowlist.push(n),
                    Err(e) => self.problem_at(a.span(), &format!("{key}[{i}]"), e.to_string()),
                }
            }
        }
        if self.problems.len() > before {
            return None;
        }
        Some(JailConfig {
            name,
            filters,
            ignore,
            sources,
            rules: Rules {
                maxretry,
                findtime,
                bantime,
                increment,
                ipv4_prefix,
                ipv6_prefix,
                max_hosts,
                evidence_lines,
            },
            ports,
            allowlist,
        })
    }

    fn filters(&mut self, v: &Spanned<toml::Value>, key: &str) -> Vec<Arc<Filter>> {
        let names: Vec<(String, String)> = match v.get_ref() {
            toml::Value::String(s) => vec![(s.clone(), key.to_string())],
            toml::Value::Array(a) if !a.is_empty() => {
                let mut out = Vec::new();
                for (i, x) in a.iter().enumerate() {
                    match x.as_str() {
                        Some(s) => out.push((s.to_string(), format!("{key}[{i}]"))),
                        None => {
                            self.problem_at(
                                v.span(),
                                key,
                                "filters are names or paths (strings)".into(),
                            );
                            return Vec::new();
                        }
                    }
                }
                out
            }
            _ => {
                self.problem_at(
                    v.span(),
                    key,
                    "expected a filter name or path, or a non-empty list of them".into(),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (name, k) in names {
            if let Some(f) = self.filters.get(&name) {
                out.push(f.clone());
                continue;
            }
            let compiled = if let Some(f) = Filter::builtin(&name) {
                Ok(f)
            } else if let Some(spec) = name.strip_prefix("fail2ban:") {
                crate::fail2ban::filter_from_spec(spec, self.dir)
            } else if name.contains('/') || name.ends_with(".toml") {
                let p = self.dir.join(&name);
                Filter::from_toml_file(&p)
                    .map_err(|e| format!("filter {}: {}", p.display(), crate::error_chain(&e)))
            } else {
                Err(format!(
                    "unknown filter `{name}` (built-in: {}; a filter file is a path containing '/')",
                    Filter::builtin_names().join(", ")
                ))
            };
            match compiled {
                Ok(f) => {
                    let f = Arc::new(f);
                    self.filters.insert(name, f.clone());
                    out.push(f);
                }
                Err(m) => self.problem_at(v.span(), &k, m),
            }
        }
        out
    }

    fn sources(
        &mut self,
        raw: &Spanned<RawJail>,
        j: &RawJail,
        d: &RawJail,
        jk: &str,
    ) -> Vec<SourceConf> {
        // Sources are not inherited piecewise: a jail naming any source uses only its own.
        let own = j.files.is_some()
            || j.files_any.is_some()
            || j.journal.is_some()
            || j.journal_file.is_some();
        let (src, prefix) = if own {
            (j, jk.to_string())
        } else {
            (d, "defaults".to_string())
        };
        let mut out = Vec::new();
        let mut globs = Vec::new();
        if let Some(files) = &src.files {
            if files.get_ref().is_empty() {
                self.problem_at(
                    files.span(),
                    &format!("{prefix}.files"),
                    "empty list".into(),
                );
            }
            for (i, f) in files.get_ref().iter().enumerate() {
                if f.get_ref().trim().is_empty() || !f.get_ref().starts_with('/') {
                    self.problem_at(
                        f.span(),
                        &format!("{prefix}.files[{i}]"),
                        "file globs must be absolute paths".into(),
                    );
                } else {
                    globs.push(f.get_ref().clone());
                }
            }
        }
        if let Some(any) = &src.files_any {
            let paths: Vec<&String> = any.get_ref().iter().map(|s| s.get_ref()).collect();
            if paths.is_empty() {
                self.problem_at(
                    any.span(),
                    &format!("{prefix}.files_any"),
                    "empty list".into(),
                );
            } else if let Some((i, bad)) =
                paths.iter().enumerate().find(|(_, p)| !p.starts_with('/'))
            {
                self.problem_at(
                    any.get_ref()[i].span(),
                    &format!("{prefix}.files_any[{i}]"),
                    format!("`{bad}` is not an absolute path"),
                );
            } else {
                // The first that exists now; if none does, wait for the first.
                let pick = paths
                    .iter()
                    .find(|p| Path::new(p.as_str()).exists())
                    .unwrap_or(&paths[0]);
                if !globs.contains(pick) {
                    globs.push((*pick).clone());
                }
            }
        }
        if !globs.is_empty() {
            out.push(SourceConf::Files(globs));
        }
        if src.journal.is_some() || src.journal_file.is_some() {
            let mut matches = Vec::new();
            if let Some(m) = &src.journal {
                for (i, x) in m.get_ref().iter().enumerate() {
                    let s = x.get_ref();
                    if s != "+" && s.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                        self.problem_at(
                            x.span(),
                            &format!("{prefix}.journal[{i}]"),
                            format!("`{s}` is not a journal match (FIELD=value or +)"),
                        );
                    }
                    matches.push(s.clone());
                }
            }
            let file = src
                .journal_file
                .as_ref()
                .map(|f| self.dir.join(f.get_ref()));
            out.push(SourceConf::Journal { matches, file });
        }
        if out.is_empty()
            && !(src.files.is_some()
                || src.files_any.is_some()
                || src.journal.is_some()
                || src.journal_file.is_some())
        {
            self.problem_at(
                raw.span(),
                &format!("{jk}.files"),
                "a jail needs a source: files, files_any, journal or journal_file".into(),
            );
        }
        out
    }

    fn increment(&mut self, v: &Spanned<toml::Value>, key: &str) -> Option<Increment> {
        let default = Increment {
            factor: DEFAULT_INCREMENT_FACTOR,
            max: Some(DEFAULT_INCREMENT_MAX),
        };
        match v.get_ref() {
            toml::Value::Boolean(true) => Some(default),
            toml::Value::Boolean(false) => None,
            toml::Value::Table(t) => {
                let mut inc = default;
                for (k, x) in t {
                    let kk = format!("{key}.{k}");
                    match (k.as_str(), x) {
                        ("enabled", toml::Value::Boolean(b)) => {
                            if !b {
                                return None;
                            }
                        }
                        ("factor", toml::Value::Float(f)) => inc.factor = *f,
                        ("factor", toml::Value::Integer(i)) => inc.factor = *i as f64,
                        ("max", toml::Value::String(s)) => match addr::parse_ban_length(s) {
                            Ok(m) => inc.max = m,
                            Err(e) => self.problem_at(v.span(), &kk, e.to_string()),
                        },
                        ("enabled" | "factor" | "max", _) => {
                            self.problem_at(v.span(), &kk, format!("wrong type ({})", x.type_str()))
                        }
                        _ => self.problem_at(
                            v.span(),
                            &kk,
                            "unknown key (expected enabled, factor, max)".into(),
                        ),
                    }
                }
                if !(1.0..=100.0).contains(&inc.factor) {
                    self.problem_at(
                        v.span(),
                        &format!("{key}.factor"),
                        "must be between 1 and 100".into(),
                    );
                }
                Some(inc)
            }
            other => {
                self.problem_at(
                    v.span(),
                    key,
                    format!(
                        "expected a table {{ factor, max }} or a boolean, not {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    fn ports(&mut self, v: &Spanned<toml::Value>, key: &str) -> PortSet {
        let text = match v.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Array(a) => {
                let mut parts = Vec::new();
                for x in a {
                    match x {
                        toml::Value::String(s) => parts.push(s.clone()),
                        toml::Value::Integer(i) => parts.push(i.to_string()),
                        _ => {
                            self.problem_at(v.span(), key, "ports are names or numbers".into());
                            return PortSet::all();
                        }
                    }
                }
                parts.join(",")
            }
            other => {
                self.problem_at(
                    v.span(),
                    key,
                    format!(
                        "expected \"all\" or a list of ports, not {}",
                        other.type_str()
                    ),
                );
                return PortSet::all();
            }
        };
        PortSet::parse(&text).unwrap_or_else(|e| {
            self.problem_at(v.span(), key, e.to_string());
            PortSet::all()
        })
    }
}

/// The gid of the group called `name` (the system's group database).
fn group_named(name: &str) -> Result<u32, String> {
    if name.is_empty() {
        return Err("an empty group name".into());
    }
    let c = std::ffi::CString::new(name).map_err(|_| format!("{name:?} is not a group name"))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    loop {
        // SAFETY: zeroed is a valid `group`; getgrnam_r writes it and `buf`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the lengths given.
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 24 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "looking up group {name:?}: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if found.is_null() {
            return Err(format!("no group named {name:?} on this system"));
        }
        return Ok(grp.gr_gid);
    }
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests;

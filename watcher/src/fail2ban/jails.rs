//! jail.conf, jail.local, jail.d/*.conf|local and paths-*.conf read as
//! fail2ban's `JailsReader` reads them, turned into this agent's jails.
//! What cannot be honoured (a mail action, `ignorecommand`, a ban-time
//! formula) is a warning naming file:line, never silently dropped.
use std::{
    net::ToSocketAddrs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{
    filterconf::{FilterConfError, FilterFile, FilterReader, Pattern},
    ini::{Config as Ini, IniError, Lookup, Origin, Vars},
    tags,
};
use crate::{
    addr::{self, IpNet, PortSet},
    config::{Config, JailConfig, SourceConf},
    filter::Filter,
    jail::{Increment, Rules},
};

/// One thing fail2xdp does differently from fail2ban, or cannot do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub origin: Option<Origin>,
    pub jail: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(o) = &self.origin {
            write!(f, "{o}: ")?;
        }
        if let Some(j) = &self.jail {
            write!(f, "[{j}] ")?;
        }
        f.write_str(&self.message)
    }
}

/// A jail's settings as fail2ban resolves them (for `check-config` and
/// `import-fail2ban`).
#[derive(Debug, Clone)]
pub struct JailReport {
    pub name: String,
    pub enabled: bool,
    /// `filter` as written after interpolation (`postfix[mode=auth]`).
    pub filter: String,
    pub logpath: Vec<String>,
    pub backend: String,
    pub maxretry: i64,
    pub findtime_s: i64,
    /// `None`: permanent.
    pub bantime_s: Option<i64>,
    pub ignoreip: Vec<String>,
    pub ports: PortSet,
    pub usedns: String,
    pub actions: Vec<String>,
    pub failregex: Vec<Pattern>,
    pub ignoreregex_count: usize,
    pub journalmatch: Vec<Vec<String>>,
    pub datepattern: Option<String>,
    /// Where the jail's section starts.
    pub origin: Option<Origin>,
}

#[derive(Debug, thiserror::Error)]
pub enum JailsError {
    #[error("{}: no jail.conf (nor jail.local) here", .0.display())]
    NoJails(PathBuf),
    #[error(transparent)]
    Ini(#[from] IniError),
}

/// What a fail2ban configuration directory gives.
pub struct Loaded {
    pub config: Config,
    pub reports: Vec<JailReport>,
    pub warnings: Vec<Warning>,
    /// The resolved filter of each enabled jail, by jail name.
    pub filters: Vec<(String, FilterFile)>,
}

/// The fail2ban version whose behaviour this follows (for `%(fail2ban_version)s`).
const FAIL2BAN_VERSION: &str = "1.0.2";

pub fn load(dir: &Path) -> Result<Loaded, JailsError> {
    let mut cfg =
        Ini::read_base(&dir.join("jail"))?.ok_or_else(|| JailsError::NoJails(dir.to_path_buf()))?;
    cfg.merge_defaults("fail2ban_version", FAIL2BAN_VERSION);
    cfg.merge_defaults("fail2ban_confpath", &dir.display().to_string());
    let mut out = Loaded {
        config: Config {
            origin: dir.display().to_string(),
            ..Config::empty()
        },
        reports: Vec::new(),
        warnings: Vec::new(),
        filters: Vec::new(),
    };
    for (path, origin) in &cfg.missing {
        out.warnings.push(Warning {
            origin: Some(origin.clone()),
            jail: None,
            message: format!(
                "included file {} does not exist (fail2ban skips it silently)",
                path.display()
            ),
        });
    }
    let names: Vec<String> = cfg.section_names().map(str::to_string).collect();
    for name in names {
        if name == "INCLUDES" {
            continue;
        }
        match jail(&mut cfg, dir, &name, &mut out.warnings) {
            Ok(Some((report, jc, filter))) => {
                if let Some(jc) = jc {
                    out.config.jails.push(jc);
                }
                if let Some(f) = filter {
                    out.filters.push((name.clone(), f));
                }
                out.reports.push(report);
            }
            Ok(None) => {}
            Err(message) => out.warnings.push(Warning {
                origin: cfg
                    .origin(&name, "enabled")
                    .or_else(|| cfg.origin(&name, "filter")),
                jail: Some(name.clone()),
                message: format!("{message}; jail skipped (as fail2ban skips it)"),
            }),
        }
    }
    Ok(out)
}

fn get(cfg: &Ini, jail: &str, opt: &str) -> Result<Option<String>, String> {
    match cfg
        .get(jail, opt, &Vars::new())
        .map_err(|e| e.to_string())?
    {
        Lookup::Found(v) => Ok(Some(v)),
        _ => Ok(None),
    }
}

fn as_bool(v: &str) -> bool {
    matches!(v.to_lowercase().as_str(), "1" | "on" | "true" | "yes")
}

/// The options fail2ban reads for a jail (its `_configOpts`).
const JAIL_OPTS: &[&str] = &[
    "enabled",
    "backend",
    "maxretry",
    "maxmatches",
    "findtime",
    "bantime",
    "bantime.increment",
    "bantime.factor",
    "bantime.formula",
    "bantime.multipliers",
    "bantime.maxtime",
    "bantime.rndtime",
    "bantime.overalljails",
    "ignorecommand",
    "ignoreself",
    "ignoreip",
    "ignorecache",
    "filter",
    "logtimezone",
    "logencoding",
    "logpath",
    "action",
    "usedns",
    "prefregex",
    "ignoreregex",
    "failregex",
    "maxlines",
    "datepattern",
    "journalmatch",
];

type JailOut = (JailReport, Option<JailConfig>, Option<FilterFile>);

fn jail(
    cfg: &mut Ini,
    dir: &Path,
    name: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Option<JailOut>, String> {
    let enabled = get(cfg, name, "enabled")?.is_some_and(|v| as_bool(&v));
    let backend = get(cfg, name, "backend")?.unwrap_or_else(|| "auto".into());
    let filter_spec = get(cfg, name, "filter")?.unwrap_or_default();
    let origin = |cfg: &Ini, k: &str| cfg.origin(name, k);
    let warn = |w: &mut Vec<Warning>, o: Option<Origin>, m: String| {
        w.push(Warning {
            origin: o,
            jail: Some(name.to_string()),
            message: m,
        })
    };
    let mut report = JailReport {
        name: name.to_string(),
        enabled,
        filter: filter_spec.clone(),
        logpath: Vec::new(),
        backend: backend.clone(),
        maxretry: 0,
        findtime_s: 0,
        bantime_s: None,
        ignoreip: Vec::new(),
        ports: PortSet::all(),
        usedns: String::new(),
        actions: Vec::new(),
        failregex: Vec::new(),
        ignoreregex_count: 0,
        journalmatch: Vec::new(),
        datepattern: None,
        origin: origin(cfg, "enabled"),
    };
    if !enabled {
        return Ok(Some((report, None, None)));
    }
    // The filter, resolved with the first options, merged as known/...
    let mut reader = None;
    if !filter_spec.is_empty() {
        let (fname, fopts) = tags::extract_options(&filter_spec)
            .map_err(|e| format!("invalid filter definition: {e}"))?;
        let mut r = match FilterReader::open(dir, &fname, fopts) {
            Ok(r) => r,
            Err(FilterConfError::NotFound(_)) => {
                return Err(format!("unable to read the filter {fname:?}"));
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut first = Vars::new();
        first.insert("enabled".into(), "True".into());
        first.insert("backend".into(), backend.clone());
        first.insert("filter".into(), filter_spec.clone());
        let known = r
            .known_for_jail(&first, &backend)
            .map_err(|e| e.to_string())?;
        cfg.merge_section(name, &known, "known/");
        reader = Some((fname, r));
    } else {
        warn(
            warnings,
            origin(cfg, "filter"),
            "no filter set for this jail".into(),
        );
    }
    // All the jail's options, now that known/... can be interpolated.
    let mut opts = Vars::new();
    for &o in JAIL_OPTS {
        if let Some(v) = get(cfg, name, o)? {
            opts.insert(o.to_string(), v);
        }
    }
    let o = |k: &str| opts.get(k).cloned();
    let int = |w: &mut Vec<Warning>, k: &str| -> Option<i64> {
        let v = o(k)?;
        match v.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                w.push(Warning {
                    origin: cfg.origin(name, k),
                    jail: Some(name.to_string()),
                    message: format!("{k} = {v:?} is not a number; fail2ban's default is used"),
                });
                None
            }
        }
    };
    let maxretry = int(warnings, "maxretry").unwrap_or(5);
    let seconds = |w: &mut Vec<Warning>, k: &str, default: i64| -> i64 {
        match o(k) {
            Some(v) => match str2seconds(&v) {
                Some(s) => s,
                None => {
                    w.push(Warning {
                        origin: cfg.origin(name, k),
                        jail: Some(name.to_string()),
                        message: format!("{k} = {v:?} is not a time; {default} s is used"),
                    });
                    default
                }
            },
            None => default,
        }
    };
    let findtime = seconds(warnings, "findtime", 600);
    let bantime = seconds(warnings, "bantime", 600);
    let usedns = o("usedns").unwrap_or_else(|| "warn".into());

    // The filter's second pass, with every jail option.
    let mut file = None;
    if let Some((fname, r)) = reader {
        let mut f = r.resolve_for_jail(&opts).map_err(|e| e.to_string())?;
        // A failregex/ignoreregex of the jail itself comes on top (fail2ban
        // sends those after the filter's, which it then leaves out).
        for (k, list) in [
            ("failregex", &mut f.failregex),
            ("ignoreregex", &mut f.ignoreregex),
        ] {
            if let Some(v) = o(k) {
                let og = cfg.origin(name, k);
                list.extend(v.split('\n').filter(|l| !l.is_empty()).map(|l| Pattern {
                    text: l.to_string(),
                    origin: og.clone(),
                }));
            }
        }
        for w in &f.warnings {
            warn(warnings, None, format!("filter {fname}: {w}"));
        }
        for (p, og) in &f.missing_includes {
            warn(
                warnings,
                Some(og.clone()),
                format!(
                    "filter {fname}: included file {} does not exist (fail2ban skips it silently)",
                    p.display()
                ),
            );
        }
        file = Some((fname, f));
    }

    // Actions: the port scope of the banning ones, warnings for the rest.
    let mut scope: Option<Vec<u16>> = Some(Vec::new());
    let mut banning = 0;
    let action_origin = cfg.origin(name, "action");
    for a in tags::split_with_options(&o("action").unwrap_or_default()) {
        let a = a.trim();
        if a.is_empty() {
            continue;
        }
        let (aname, aopts) = tags::extract_options(a)
            .map_err(|e| format!("invalid action definition {a:?}: {e}"))?;
        report.actions.push(aname.clone());
        let file = dir.join("action.d").join(format!("{aname}.conf"));
        let local = dir.join("action.d").join(format!("{aname}.local"));
        if !aname.ends_with(".py") && !file.is_file() && !local.is_file() {
            return Err(format!("unable to read action {aname:?}"));
        }
        let kind = action_kind(&aname, &aopts);
        match kind {
            ActionKind::AllPorts => {
                banning += 1;
                scope = None;
            }
            ActionKind::Ports => {
                banning += 1;
                let port = aopts
                    .iter()
                    .find(|(k, _)| k == "port")
                    .map(|(_, v)| v.clone())
                    .or_else(|| o("port"))
                    .unwrap_or_else(|| "0:65535".into());
                let (known, unknown) = split_known_ports(&port);
                for u in &unknown {
                    warn(
                        warnings,
                        action_origin.clone(),
                        format!(
                            "action {aname}: port {u:?} is neither a number nor a service name here; left out of the ban (fail2ban's firewall rule would fail on it)"
                        ),
                    );
                }
                match ports_of(&known) {
                    Ok(Some(p)) => {
                        if let Some(s) = &mut scope {
                            s.extend(p);
                        }
                    }
                    Ok(None) => scope = None,
                    Err(m) => {
                        warn(
                            warnings,
                            action_origin.clone(),
                            format!("action {aname}: {m}; all ports are banned"),
                        );
                        scope = None;
                    }
                }
            }
            ActionKind::Mail => warn(
                warnings,
                action_origin.clone(),
                format!(
                    "action {aname} sends mail: not done (fail2xdp only bans; `fail2xdp explain` shows what a mail would)"
                ),
            ),
            ActionKind::Other => warn(
                warnings,
                action_origin.clone(),
                format!(
                    "action {aname} is not a firewall ban fail2xdp knows: not run (the ban is made in XDP, all ports)"
                ),
            ),
        }
        if kind == ActionKind::Other {
            scope = None;
        }
    }
    if banning == 0 {
        warn(
            warnings,
            action_origin.clone(),
            "no banning action: fail2xdp bans all ports".into(),
        );
        scope = None;
    }
    let mut ports = match scope {
        None => PortSet::all(),
        Some(v) if v.is_empty() => PortSet::all(),
        Some(v) => match PortSet::from_ports(v) {
            Ok(p) => p,
            Err(e) => {
                warn(
                    warnings,
                    action_origin.clone(),
                    format!("{e}: all ports are banned"),
                );
                PortSet::all()
            }
        },
    };
    if ports.0.len() >= 65535 {
        ports = PortSet::all();
    }

    // Ignored addresses.
    let mut allowlist: Vec<IpNet> = Vec::new();
    let ignoreip: Vec<String> = o("ignoreip")
        .map(|v| {
            v.split([' ', ',', '\n'])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for ip in &ignoreip {
        // fail2ban takes `127.0.0.1/8` (host bits set) as its network.
        let net =
            addr::parse_net(ip).or_else(|e| ip.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| e));
        match net {
            Ok(n) => allowlist.push(n),
            Err(_) => match resolve(ip) {
                Some(addrs) if !addrs.is_empty() => {
                    warn(
                        warnings,
                        cfg.origin(name, "ignoreip"),
                        format!(
                            "ignoreip {ip}: a DNS name, resolved now to {} (not again until reload)",
                            addrs
                                .iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    allowlist.extend(addrs.into_iter().map(IpNet::from));
                }
                _ => warn(
                    warnings,
                    cfg.origin(name, "ignoreip"),
                    format!("ignoreip {ip}: neither an address nor a name that resolves; ignored"),
                ),
            },
        }
    }
    if o("ignorecommand").is_some_and(|v| !v.trim().is_empty()) {
        warn(warnings, cfg.origin(name, "ignorecommand"), "ignorecommand is not run: addresses it would spare can be banned (list them in ignoreip)".into());
    }
    if o("logtimezone").is_some_and(|v| !v.trim().is_empty()) {
        warn(
            warnings,
            cfg.origin(name, "logtimezone"),
            "logtimezone is not honoured: lines without a zone are read in the agent's local time"
                .into(),
        );
    }

    // Ban time increments.
    let increment = if o("bantime.increment").is_some_and(|v| as_bool(&v)) {
        let factor = o("bantime.factor")
            .and_then(|f| f.trim().parse::<f64>().ok())
            .unwrap_or(1.0);
        if (factor - 1.0).abs() > f64::EPSILON {
            warn(
                warnings,
                cfg.origin(name, "bantime.factor"),
                format!(
                    "bantime.factor = {factor}: fail2xdp doubles the ban per previous ban without the factor"
                ),
            );
        }
        if o("bantime.formula").is_some_and(|v| !v.trim().is_empty()) {
            warn(
                warnings,
                cfg.origin(name, "bantime.formula"),
                "bantime.formula is not evaluated: the ban doubles per previous ban".into(),
            );
        }
        if o("bantime.multipliers").is_some_and(|v| !v.trim().is_empty()) {
            warn(
                warnings,
                cfg.origin(name, "bantime.multipliers"),
                "bantime.multipliers are not honoured: the ban doubles per previous ban".into(),
            );
        }
        if o("bantime.overalljails").is_some_and(|v| !as_bool(&v)) {
            warn(
                warnings,
                cfg.origin(name, "bantime.overalljails"),
                "bantime.overalljails = false: fail2xdp counts previous bans over all jails".into(),
            );
        }
        let max = o("bantime.maxtime")
            .and_then(|v| str2seconds(&v))
            .filter(|&s| s > 0)
            .map(|s| Duration::from_secs(s as u64));
        Some(Increment {
            factor: 2.0,
            max: max.or(Some(Duration::from_secs(7 * 86_400))),
        })
    } else {
        None
    };

    // Sources.
    let logpath: Vec<String> = o("logpath")
        .map(|v| {
            v.split('\n')
                .map(|p| {
                    let p = p.trim();
                    match p.rsplit_once(' ') {
                        Some((path, "head" | "tail")) => path.trim().to_string(),
                        _ => p.to_string(),
                    }
                })
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let sources = if backend.starts_with("systemd") {
        let jm = file
            .as_ref()
            .map(|(_, f)| f.journalmatch.clone())
            .unwrap_or_default();
        let mut matches = Vec::new();
        for (i, line) in jm.iter().enumerate() {
            if i > 0 {
                matches.push("+".to_string());
            }
            matches.extend(line.iter().cloned());
        }
        if backend != "systemd" {
            warn(
                warnings,
                cfg.origin(name, "backend"),
                format!(
                    "backend {backend}: its journal options are not honoured; the system journal is read"
                ),
            );
        }
        vec![SourceConf::Journal {
            matches,
            file: None,
        }]
    } else {
        if !matches!(
            backend.as_str(),
            "auto" | "polling" | "pyinotify" | "gamin" | "inotify"
        ) {
            warn(
                warnings,
                cfg.origin(name, "backend"),
                format!("backend {backend} is unknown: log files are followed"),
            );
        }
        let mut globs = Vec::new();
        for p in &logpath {
            if !p.starts_with('/') {
                warn(
                    warnings,
                    cfg.origin(name, "logpath"),
                    format!("logpath {p} is not absolute; skipped"),
                );
                continue;
            }
            if !glob_matches_any(p) {
                warn(
                    warnings,
                    cfg.origin(name, "logpath"),
                    format!(
                        "no file matches logpath {p} yet (fail2ban refuses to start the jail); fail2xdp waits for it"
                    ),
                );
            }
            globs.push(p.clone());
        }
        if globs.is_empty() {
            return Err("no log file to read (logpath)".into());
        }
        vec![SourceConf::Files(globs)]
    };

    let (maxretry_eff, bantime_eff) = (maxretry.max(1), (bantime >= 0).then_some(bantime));
    report.logpath = logpath;
    report.maxretry = maxretry;
    report.findtime_s = findtime;
    report.bantime_s = bantime_eff;
    report.ignoreip = ignoreip;
    report.ports = ports.clone();
    report.usedns = usedns.clone();
    if let Some((_, f)) = &file {
        report.failregex = f.failregex.clone();
        report.ignoreregex_count = f.ignoreregex.len();
        report.journalmatch = f.journalmatch.clone();
        report.datepattern = f.datepattern.clone();
    }

    let Some((fname, f)) = file else {
        return Ok(Some((report, None, None)));
    };
    let jail_name = match crate::ban::JailName::new(name) {
        Ok(n) => n,
        Err(e) => {
            warn(
                warnings,
                report.origin.clone(),
                format!("{e}; jail skipped"),
            );
            return Ok(Some((report, None, Some(f))));
        }
    };
    let compiled = Filter::from_fail2ban(&fname, &f, Some(&usedns)).map_err(|e| e.to_string())?;
    if compiled
        .fail2ban()
        .is_some_and(|x| x.mlfid || x.maxlines > 1)
    {
        warn(
            warnings,
            f.prefregex.as_ref().and_then(|p| p.origin.clone()),
            format!(
                "filter {fname} joins lines of a connection (<F-MLFID> or maxlines); the agent matches each line alone until its match stage holds a correlator"
            ),
        );
    }
    if (usedns.eq_ignore_ascii_case("yes") || usedns.eq_ignore_ascii_case("warn"))
        && f.failregex.iter().any(|p| p.text.contains("<HOST>"))
    {
        {
            warn(
                warnings,
                cfg.origin(name, "usedns"),
                format!(
                    "usedns = {usedns}: a failure naming only a host name is reported, not banned (no DNS lookups)"
                ),
            );
        }
    }
    let rules = Rules {
        maxretry: u32::try_from(maxretry_eff).unwrap_or(u32::MAX),
        findtime: Duration::from_secs(findtime.max(0) as u64),
        bantime: bantime_eff.map(|s| Duration::from_secs(s as u64)),
        increment,
        ipv4_prefix: 32,
        ipv6_prefix: 128,
        max_hosts: 1_000_000,
        evidence_lines: 5,
    };
    let jc = JailConfig {
        name: jail_name,
        filters: vec![Arc::new(compiled)],
        ignore: Vec::new(),
        sources,
        rules,
        ports,
        allowlist,
    };
    Ok(Some((report, Some(jc), Some(f))))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionKind {
    AllPorts,
    Ports,
    Mail,
    Other,
}

/// What a fail2ban action stands for here.
fn action_kind(name: &str, opts: &[(String, String)]) -> ActionKind {
    let n = name.to_ascii_lowercase();
    let opt = |k: &str| opts.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
    if n.contains("mail") || n.contains("whois") || n.starts_with("sendmail") || n.contains("xarf")
    {
        return ActionKind::Mail;
    }
    let firewall = [
        "iptables",
        "ip6tables",
        "nftables",
        "firewallcmd",
        "shorewall",
        "ufw",
        "pf",
        "ipfw",
        "ipset",
        "route",
        "hostsdeny",
        "npf",
        "ipfilter",
        "bsd-ipfw",
        "apf",
        "csf",
        "symbiosis",
        "dummy",
    ];
    if !firewall.iter().any(|f| n.starts_with(f)) {
        return ActionKind::Other;
    }
    if n.ends_with("-allports")
        || n.contains("allports")
        || opt("type") == Some("allports")
        || n == "route"
        || n == "hostsdeny"
        || n.starts_with("ipset") && !n.contains("multiport")
    {
        return ActionKind::AllPorts;
    }
    ActionKind::Ports
}

/// A fail2ban port list (`smtp,465,submission`, `0:65535`, `8000:8080`):
/// `None` for all ports.
fn ports_of(spec: &str) -> Result<Option<Vec<u16>>, String> {
    let mut v = Vec::new();
    for item in spec
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if let Some((a, b)) = item.split_once(':') {
            let a = port_number(a).ok_or_else(|| format!("port {a:?} is unknown"))?;
            let b = port_number(b).ok_or_else(|| format!("port {b:?} is unknown"))?;
            if a <= 1 && b == 65535 {
                return Ok(None);
            }
            if b < a || usize::from(b - a) > fail2xdp_common::MAX_BAN_PORTS {
                return Err(format!(
                    "port range {item} is wider than a ban's {} ports",
                    fail2xdp_common::MAX_BAN_PORTS
                ));
            }
            v.extend((a..=b).filter(|&p| p > 0));
        } else {
            v.push(port_number(item).ok_or_else(|| format!("port {item:?} is unknown"))?);
        }
    }
    if v.is_empty() {
        return Ok(None);
    }
    Ok(Some(v))
}

/// The items of a port list that name a port, and those that do not.
fn split_known_ports(spec: &str) -> (String, Vec<String>) {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for item in spec
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let ok = match item.split_once(':') {
            Some((a, b)) => port_number(a).is_some() && port_number(b).is_some(),
            None => port_number(item).is_some(),
        };
        if ok {
            known.push(item.to_string());
        } else {
            unknown.push(item.to_string());
        }
    }
    (known.join(","), unknown)
}

/// A number, a name we know, or a name from /etc/services.
fn port_number(s: &str) -> Option<u16> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u16>() {
        return Some(n);
    }
    if let Ok(p) = PortSet::parse(s)
        && let [one] = p.0[..]
    {
        return Some(one);
    }
    let services = std::fs::read_to_string("/etc/services").ok()?;
    services.lines().find_map(|l| {
        let l = l.split('#').next()?;
        let mut it = l.split_whitespace();
        let name = it.next()?;
        let port = it.next()?.split('/').next()?.parse::<u16>().ok()?;
        (name == s || it.any(|alias| alias == s)).then_some(port)
    })
}

/// Whether any file matches the glob (`*`, `?`, `[...]` in any part).
fn glob_matches_any(pattern: &str) -> bool {
    fn fnmatch(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => fnmatch(&p[1..], n) || (!n.is_empty() && fnmatch(p, &n[1..])),
            (Some(b'?'), Some(_)) => fnmatch(&p[1..], &n[1..]),
            (Some(b'['), Some(&c)) => match p.iter().position(|&b| b == b']') {
                Some(end) if end > 1 => {
                    let set = &p[1..end];
                    let (neg, set) = match set.first() {
                        Some(b'!' | b'^') => (true, &set[1..]),
                        _ => (false, set),
                    };
                    let mut hit = false;
                    let mut i = 0;
                    while i < set.len() {
                        if i + 2 < set.len() && set[i + 1] == b'-' {
                            hit |= set[i] <= c && c <= set[i + 2];
                            i += 3;
                        } else {
                            hit |= set[i] == c;
                            i += 1;
                        }
                    }
                    hit != neg && fnmatch(&p[end + 1..], &n[1..])
                }
                _ => c == b'[' && fnmatch(&p[1..], &n[1..]),
            },
            (Some(a), Some(b)) => a == b && fnmatch(&p[1..], &n[1..]),
            _ => false,
        }
    }
    fn walk(dir: &Path, parts: &[&str]) -> bool {
        let Some((first, rest)) = parts.split_first() else {
            return dir.exists();
        };
        if !first.contains(['*', '?', '[']) {
            return walk(&dir.join(first), rest);
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            return false;
        };
        rd.filter_map(Result::ok).any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            !n.starts_with('.') && fnmatch(first.as_bytes(), n.as_bytes()) && walk(&e.path(), rest)
        })
    }
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    walk(Path::new("/"), &parts)
}

/// A host name's addresses, waiting at most two seconds.
fn resolve(name: &str) -> Option<Vec<std::net::IpAddr>> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    {
        return None;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let n = name.to_string();
    std::thread::spawn(move || {
        let r: Option<Vec<_>> = (n.as_str(), 0)
            .to_socket_addrs()
            .ok()
            .map(|it| it.map(|a| a.ip()).collect());
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(2)).ok().flatten()
}

/// fail2ban's `MyTime.str2seconds`: `600`, `10m`, `1h 30m`, `1d12h`,
/// `2 weeks`, `1mo`, `1y`, `-1`.
pub fn str2seconds(v: &str) -> Option<i64> {
    let s = v.trim();
    if let Ok(n) = s.parse::<f64>() {
        return Some(n as i64);
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total = 0f64;
    let mut any = false;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b'+') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let neg = if b[i] == b'-' {
            i += 1;
            true
        } else {
            false
        };
        let ns = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let n: f64 = s[ns..i].parse().ok()?;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = s[us..i].to_ascii_lowercase();
        let year = (365.0 * 3.0 + 366.0) * 86400.0 / 4.0;
        let mult = match unit.as_str() {
            "" | "s" | "ss" | "se" | "sec" | "second" | "seconds" => 1.0,
            "m" | "mm" | "mi" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hh" | "ho" | "hou" | "hour" | "hours" => 3600.0,
            "d" | "dd" | "da" | "day" | "days" => 86400.0,
            "w" | "ww" | "we" | "wee" | "week" | "weeks" => 7.0 * 86400.0,
            "mo" | "mon" | "month" | "months" => year / 12.0,
            "y" | "yy" | "ye" | "yea" | "year" | "years" => year,
            _ => return None,
        };
        total += if neg { -n } else { n } * mult;
        any = true;
    }
    any.then_some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small fail2ban directory over the stock filters: the jail as
    /// fail2ban resolves it, `127.0.0.1/8` (host bits set) taken as its net.
    #[test]
    fn a_jail_over_the_stock_filters() {
        let stock = Path::new("/etc/fail2ban");
        assert!(
            stock.join("filter.d/postfix.conf").is_file(),
            "/etc/fail2ban is missing: install Debian's fail2ban package"
        );
        let d = tempfile::tempdir().unwrap();
        for x in ["filter.d", "action.d"] {
            std::os::unix::fs::symlink(stock.join(x), d.path().join(x)).unwrap();
        }
        let log = d.path().join("mail.log");
        std::fs::write(&log, "").unwrap();
        std::fs::write(
            d.path().join("jail.conf"),
            format!(
                "[DEFAULT]\nignoreip = 127.0.0.1/8 ::1\nbantime = 1h\nmode = normal\nfilter = %(__name__)s[mode=%(mode)s]\naction = iptables-multiport[port=\"smtp,465\"]\n         sendmail-whois\n\n[postfix]\nenabled = true\nmode = aggressive\nlogpath = {}\nmaxretry = 0\nbantime.increment = true\n\n[off]\nfilter = nope\n",
                log.display()
            ),
        )
        .unwrap();
        let l = load(d.path()).unwrap();
        assert_eq!(l.config.jails.len(), 1);
        let j = &l.config.jails[0];
        assert_eq!(j.name.as_str(), "postfix");
        assert_eq!(j.rules.maxretry, 1);
        assert_eq!(j.rules.bantime, Some(Duration::from_secs(3600)));
        assert!(j.rules.increment.is_some());
        assert_eq!(j.ports.to_string(), "25,465");
        assert!(j.allowlist.iter().any(|n| n.to_string() == "127.0.0.0/8"));
        let r = l.reports.iter().find(|r| r.name == "postfix").unwrap();
        assert_eq!(r.filter, "postfix[mode=aggressive]");
        assert_eq!(r.failregex.len(), 3);
        assert!(
            l.warnings
                .iter()
                .any(|w| w.message.contains("sendmail-whois") && w.origin.is_some())
        );
        assert!(!l.reports.iter().find(|r| r.name == "off").unwrap().enabled);
    }

    #[test]
    fn fail2ban_times() {
        assert_eq!(str2seconds("600"), Some(600));
        assert_eq!(str2seconds("10m"), Some(600));
        assert_eq!(str2seconds("1h 30m"), Some(5400));
        assert_eq!(str2seconds("1d12h"), Some(129_600));
        assert_eq!(str2seconds("2 weeks"), Some(1_209_600));
        assert_eq!(str2seconds("-1"), Some(-1));
        assert_eq!(str2seconds("1y"), Some(31_557_600));
        assert_eq!(str2seconds("soon"), None);
    }

    #[test]
    fn ports_and_actions() {
        assert_eq!(ports_of("0:65535").unwrap(), None);
        assert_eq!(
            ports_of("smtp,465,submission").unwrap(),
            Some(vec![25, 465, 587])
        );
        assert!(ports_of("1000:2000").is_err());
        assert_eq!(action_kind("iptables-allports", &[]), ActionKind::AllPorts);
        assert_eq!(action_kind("iptables-multiport", &[]), ActionKind::Ports);
        assert_eq!(
            action_kind("nftables", &[("type".into(), "allports".into())]),
            ActionKind::AllPorts
        );
        assert_eq!(action_kind("mail-whois-lines", &[]), ActionKind::Mail);
        assert_eq!(action_kind("abuseipdb", &[]), ActionKind::Other);
    }
}

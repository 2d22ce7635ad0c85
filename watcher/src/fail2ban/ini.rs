//! fail2ban's INI dialect: Python's `configparser` as fail2ban sets it up
//! (`;` inline comments after a blank, `#`/`;` comment lines, values
//! continued on more-indented lines, option names lower-cased, `%(name)s`
//! interpolation), plus fail2ban's own layer: `[INCLUDES] before/after`
//! resolved next to the including file, each file followed by its
//! `.local`, `NAME.d/*.conf|local`, and `KNOWN/<section>` keeping the
//! values a later file overrode (for `%(known/name)s`).
use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// Python's limit on nested `%(name)s`; deeper is a reference cycle.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// Where a value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    pub origin: Origin,
}

/// Options of one section, in the order first written.
#[derive(Debug, Clone, Default)]
pub struct Section {
    keys: Vec<String>,
    map: HashMap<String, Value>,
}

impl Section {
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.map.get(k)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
    }

    pub fn contains(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }

    pub fn set(&mut self, k: String, v: Value) {
        if !self.map.contains_key(&k) {
            self.keys.push(k.clone());
        }
        self.map.insert(k, v);
    }

    fn update(&mut self, other: &Section) {
        for k in &other.keys {
            self.set(k.clone(), other.map[k].clone());
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IniError {
    #[error("{origin}: {message}")]
    Parse { origin: Origin, message: String },
    #[error("{}: cannot read: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("[{section}] {option}: {message}")]
    Interpolation {
        section: String,
        option: String,
        message: String,
        origin: Option<Origin>,
    },
}

/// One file as configparser reads it.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub defaults: Section,
    /// In file order.
    pub sections: Vec<(String, Section)>,
}

impl Parsed {
    fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }
}

/// Parses one file's text the way Python's `configparser` does with
/// fail2ban's settings.
pub fn parse(text: &str, file: &Path) -> Result<Parsed, IniError> {
    let file: Arc<Path> = Arc::from(file);
    let mut out = Parsed::default();
    // (section index or None for DEFAULT) of the current section.
    let mut cur: Option<Option<usize>> = None;
    let mut seen_sections: Vec<String> = Vec::new();
    let mut seen_options: Vec<(String, String)> = Vec::new();
    // The option being read: (section, key, lines, first line number).
    let mut open: Option<(Option<usize>, String, Vec<String>, usize)> = None;
    let mut indent_level = 0usize;
    let err = |line: usize, m: String| IniError::Parse {
        origin: Origin {
            file: file.clone(),
            line,
        },
        message: m,
    };

    let flush = |open: &mut Option<(Option<usize>, String, Vec<String>, usize)>,
                 out: &mut Parsed| {
        if let Some((sec, key, lines, line)) = open.take() {
            let text = lines.join("\n").trim_end().to_string();
            let v = Value {
                text,
                origin: Origin {
                    file: file.clone(),
                    line,
                },
            };
            match sec {
                None => out.defaults.set(key, v),
                Some(i) => out.sections[i].1.set(key, v),
            }
        }
    };

    for (n, raw) in text.split('\n').enumerate() {
        let lineno = n + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let comment = comment_start(line);
        let value = line[..comment.unwrap_or(line.len())].trim();
        if value.is_empty() {
            // A blank line inside a value is part of it; a comment line is not.
            if comment.is_none()
                && let Some((_, _, lines, _)) = &mut open
            {
                lines.push(String::new());
            }
            continue;
        }
        let cur_indent = line.len() - line.trim_start().len();
        if open.is_some() && cur_indent > indent_level {
            if let Some((_, _, lines, _)) = &mut open {
                lines.push(value.to_string());
            }
            continue;
        }
        flush(&mut open, &mut out);
        indent_level = cur_indent;
        if let Some(h) = value.strip_prefix('[')
            && let Some(name) = h.rfind(']').map(|e| &h[..e])
            && !name.is_empty()
        {
            let name = name.to_string();
            if seen_sections.contains(&name) {
                return Err(err(lineno, format!("section [{name}] appears twice")));
            }
            seen_sections.push(name.clone());
            if name == "DEFAULT" {
                cur = Some(None);
            } else {
                let i = match out.sections.iter().position(|(s, _)| *s == name) {
                    Some(i) => i,
                    None => {
                        out.sections.push((name, Section::default()));
                        out.sections.len() - 1
                    }
                };
                cur = Some(Some(i));
            }
            continue;
        }
        let Some(sec) = cur else {
            return Err(err(lineno, "no [section] before this line".into()));
        };
        // `name = value` or `name : value`, the first delimiter wins.
        let Some(d) = value.find(['=', ':']) else {
            return Err(err(lineno, format!("not `name = value`: {value:?}")));
        };
        let key = value[..d].trim_end().to_lowercase();
        if key.is_empty() {
            return Err(err(lineno, "an option without a name".into()));
        }
        let sname = match sec {
            None => "DEFAULT".to_string(),
            Some(i) => out.sections[i].0.clone(),
        };
        if seen_options.contains(&(sname.clone(), key.clone())) {
            return Err(err(
                lineno,
                format!("option `{key}` appears twice in [{sname}]"),
            ));
        }
        seen_options.push((sname, key.clone()));
        let val = value[d + 1..].trim().to_string();
        open = Some((sec, key, vec![val], lineno));
    }
    flush(&mut open, &mut out);
    Ok(out)
}

/// Where a comment starts in a line: the whole line for `#`/`;` first, or
/// a `;` at the start or after a blank.
fn comment_start(line: &str) -> Option<usize> {
    let t = line.trim();
    if t.starts_with('#') || t.starts_with(';') {
        return Some(0);
    }
    let b = line.as_bytes();
    (0..b.len()).find(|&i| {
        b[i] == b';'
            && (i == 0
                || line[..i]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_whitespace))
    })
}

/// Files read into one configuration, merged in order.
#[derive(Debug, Clone, Default)]
pub struct Config {
    defaults: Section,
    sections: Vec<(String, Section)>,
    /// Every file read, in order.
    pub files: Vec<PathBuf>,
    /// Includes that named a file that is not there (fail2ban skips them silently).
    pub missing: Vec<(PathBuf, Origin)>,
}

/// Raw lookups: `Missing` says which part was missing, as configparser's
/// NoSectionError / NoOptionError do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    NoSection,
    NoOption,
}

impl<T> Lookup<T> {
    pub fn found(self) -> Option<T> {
        match self {
            Lookup::Found(t) => Some(t),
            _ => None,
        }
    }
}

/// Extra values that take precedence over the section (configparser's `vars`).
pub type Vars = HashMap<String, String>;

impl Config {
    /// `BASE.conf`, `BASE.d/*.conf`, `BASE.local`, `BASE.d/*.local` (those
    /// that exist) with their includes: fail2ban's `ConfigReader.read`.
    /// `Ok(None)`: none of them exists.
    pub fn read_base(base: &Path) -> Result<Option<Config>, IniError> {
        let mut files = vec![with_ext(base, "conf")];
        let dir = with_ext(base, "d");
        files.extend(sorted_glob(&dir, "conf"));
        files.push(with_ext(base, "local"));
        files.extend(sorted_glob(&dir, "local"));
        files.retain(|f| f.exists());
        if files.is_empty() {
            return Ok(None);
        }
        Self::read_files(&files).map(Some)
    }

    /// Reads `files` with their includes (`readexplicit` for one file).
    pub fn read_files(files: &[PathBuf]) -> Result<Config, IniError> {
        let mut cache: HashMap<PathBuf, Option<Parsed>> = HashMap::new();
        let mut cfg = Config::default();
        let mut full = Vec::new();
        cfg.includes(files, &[], &mut cache, &mut full)?;
        for f in full {
            let Some(p) = cache.get(&f).cloned().flatten() else {
                continue;
            };
            cfg.files.push(f);
            cfg.defaults.update(&p.defaults);
            for (name, s) in p.sections {
                // `[name?cond]`: the keys become `key?cond` of `[name]`.
                let (name, s) = match conditional(&name) {
                    Some((n, cond)) => {
                        let mut c = Section::default();
                        for k in s.keys() {
                            c.set(format!("{k}{cond}"), s.get(k).cloned().expect("own key"));
                        }
                        (n.to_string(), c)
                    }
                    None => (name, s),
                };
                match cfg.sections.iter().position(|(n, _)| *n == name) {
                    Some(i) => {
                        let mut known = Section::default();
                        for k in s.keys() {
                            if let Some(v) = cfg.sections[i].1.get(k) {
                                known.set(k.to_string(), v.clone());
                            }
                        }
                        if !known.keys.is_empty() {
                            cfg.section_mut(&format!("KNOWN/{name}")).update(&known);
                        }
                        cfg.sections[i].1.update(&s);
                    }
                    None => cfg.sections.push((name, s)),
                }
            }
        }
        Ok(cfg)
    }

    /// fail2ban's `_getIncludes`: each file followed by its `.local`, and
    /// each replaced by `before + [file] + after`.
    fn includes(
        &mut self,
        files: &[PathBuf],
        seen: &[PathBuf],
        cache: &mut HashMap<PathBuf, Option<Parsed>>,
        out: &mut Vec<PathBuf>,
    ) -> Result<(), IniError> {
        let mut expanded: Vec<PathBuf> = Vec::new();
        for f in files {
            expanded.push(f.clone());
            let local = f.with_extension("local");
            if !files.contains(&local) && local.is_file() {
                expanded.push(local);
            }
        }
        for f in expanded {
            let parsed = match cache.get(&f) {
                Some(p) => p.clone(),
                None => {
                    let p = match std::fs::read(&f) {
                        Ok(bytes) => {
                            let text = String::from_utf8_lossy(&bytes);
                            Some(parse(&text, &f)?)
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => {
                            return Err(IniError::Read {
                                path: f.clone(),
                                message: e.to_string(),
                            });
                        }
                    };
                    cache.insert(f.clone(), p.clone());
                    p
                }
            };
            let Some(parsed) = parsed else {
                continue;
            };
            let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
            let mut before = Vec::new();
            let mut after = Vec::new();
            if let Some(inc) = parsed.section("INCLUDES") {
                // The include list is read from that one file, interpolated there.
                let one = Config {
                    defaults: parsed.defaults.clone(),
                    sections: parsed.sections.clone(),
                    ..Config::default()
                };
                for (opt, list) in [("before", &mut before), ("after", &mut after)] {
                    if !inc.contains(opt) {
                        continue;
                    }
                    let v = one.get("INCLUDES", opt, &Vars::new())?;
                    let origin = inc.get(opt).map(|v| v.origin.clone());
                    let Some(v) = v.found() else { continue };
                    for name in v.split('\n') {
                        let r = if Path::new(name).is_absolute() {
                            PathBuf::from(name)
                        } else {
                            dir.join(name)
                        };
                        if seen.contains(&r) {
                            continue;
                        }
                        // A missing `.local` is the usual "no customisation".
                        if !r.exists()
                            && r.extension().is_none_or(|e| e != "local")
                            && let Some(o) = &origin
                        {
                            self.missing.push((r.clone(), o.clone()));
                        }
                        let mut s = seen.to_vec();
                        s.push(f.clone());
                        self.includes(&[r], &s, cache, list)?;
                    }
                }
            }
            out.extend(before);
            out.push(f);
            out.extend(after);
        }
        Ok(())
    }

    fn section_mut(&mut self, name: &str) -> &mut Section {
        let i = match self.sections.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.sections.push((name.to_string(), Section::default()));
                self.sections.len() - 1
            }
        };
        &mut self.sections[i].1
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    pub fn defaults(&self) -> &Section {
        &self.defaults
    }

    pub fn merge_defaults(&mut self, k: &str, v: &str) {
        self.defaults.set(
            k.to_string(),
            Value {
                text: v.to_string(),
                origin: Origin {
                    file: Arc::from(Path::new("<fail2ban>")),
                    line: 0,
                },
            },
        );
    }

    /// Adds `options` to `section` with `prefix` on every key
    /// (fail2ban's `merge_section`, used for `known/` options of a jail).
    pub fn merge_section(&mut self, section: &str, options: &[(String, String)], prefix: &str) {
        let origin = Origin {
            file: Arc::from(Path::new("<filter>")),
            line: 0,
        };
        let s = self.section_mut(section);
        for (k, v) in options {
            if k.starts_with(prefix) {
                continue;
            }
            s.set(
                format!("{prefix}{k}"),
                Value {
                    text: v.clone(),
                    origin: origin.clone(),
                },
            );
        }
    }

    /// Section names in order, without fail2ban's `KNOWN/` bookkeeping.
    pub fn section_names(&self) -> impl Iterator<Item = &str> {
        self.sections
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !n.starts_with("KNOWN/"))
    }

    pub fn has_section(&self, name: &str) -> bool {
        self.section(name).is_some()
    }

    /// Own keys of a section (without those of `[DEFAULT]`).
    pub fn own_options(&self, section: &str) -> Vec<String> {
        self.section(section)
            .map(|s| s.keys().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Keys of a section and of `[DEFAULT]`.
    pub fn options(&self, section: &str) -> Vec<String> {
        let mut v = self.own_options(section);
        for k in self.defaults.keys() {
            if !v.iter().any(|x| x == k) {
                v.push(k.to_string());
            }
        }
        v
    }

    /// Where `option` of `section` (or of `[DEFAULT]`) was written.
    pub fn origin(&self, section: &str, option: &str) -> Option<Origin> {
        let k = option.to_lowercase();
        self.section(section)
            .and_then(|s| s.get(&k))
            .or_else(|| self.defaults.get(&k))
            .map(|v| v.origin.clone())
    }

    /// The value as written: `vars`, then the section, then `[DEFAULT]`.
    pub fn get_raw(&self, section: &str, option: &str, vars: &Vars) -> Lookup<String> {
        let k = option.to_lowercase();
        let sec = self.section(section);
        if sec.is_none() && section != "DEFAULT" {
            return Lookup::NoSection;
        }
        if let Some(v) = vars.get(&k) {
            return Lookup::Found(v.clone());
        }
        if let Some(v) = sec.and_then(|s| s.get(&k)) {
            return Lookup::Found(v.text.clone());
        }
        match self.defaults.get(&k) {
            Some(v) => Lookup::Found(v.text.clone()),
            None => Lookup::NoOption,
        }
    }

    /// configparser's `get` with fail2ban's interpolation: `%(name)s` from
    /// `vars`, the section, `[DEFAULT]`, `__name__` (the section) and
    /// `%(section/name)s`, `%(known/name)s`, `%(default/name)s`.
    pub fn get(
        &self,
        section: &str,
        option: &str,
        vars: &Vars,
    ) -> Result<Lookup<String>, IniError> {
        let raw = match self.get_raw(section, option, vars) {
            Lookup::Found(r) => r,
            Lookup::NoSection => return Ok(Lookup::NoSection),
            Lookup::NoOption => return Ok(Lookup::NoOption),
        };
        if !raw.contains('%') {
            return Ok(Lookup::Found(raw));
        }
        let mut map = vars.clone();
        map.insert("__name__".into(), section.to_string());
        self.map_section_options(section, &raw, &mut map);
        let mut out = String::new();
        self.interpolate(section, option, &raw, &map, 1, &mut out)?;
        Ok(Lookup::Found(out))
    }

    /// fail2ban's `get_ex`: an option named `section/name` (from a
    /// `<section/name>` tag) is looked up in that section, `known/name` in
    /// `KNOWN/<section>` then the section itself.
    pub fn get_ex(
        &self,
        section: &str,
        option: &str,
        vars: &Vars,
    ) -> Result<Lookup<String>, IniError> {
        if let Some((sec, opt)) = section_option(option) {
            let tries: Vec<String> = match sec.to_lowercase().as_str() {
                "known" => vec![format!("KNOWN/{section}"), section.to_string()],
                "default" => vec!["DEFAULT".to_string()],
                _ => vec![sec.to_string()],
            };
            for s in tries {
                if let Lookup::Found(v) = self.get(&s, opt, &Vars::new())? {
                    return Ok(Lookup::Found(v));
                }
            }
        }
        self.get(section, option, vars)
    }

    /// Puts the raw values of the `%(section/name)s` references in `rest`
    /// into `map` (fail2ban's `_map_section_options`).
    fn map_section_options(&self, section: &str, rest: &str, map: &mut Vars) {
        if !rest.contains('/') {
            return;
        }
        let mut at = 0;
        while let Some(p) = rest[at..].find("%(") {
            let start = at + p + 2;
            let Some(e) = rest[start..].find(")s") else {
                break;
            };
            let name = &rest[start..start + e];
            at = start + e + 2;
            let Some((sec, opt)) = name.split_once('/') else {
                continue;
            };
            if sec.is_empty()
                || !sec
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
                || opt.is_empty()
                || map.contains_key(name)
            {
                continue;
            }
            let lower = sec.to_lowercase();
            let from_section = match lower.as_str() {
                "default" => None,
                "known" => Some(
                    self.section(&format!("KNOWN/{section}"))
                        .and_then(|s| s.get(opt))
                        .map(|v| v.text.clone()),
                ),
                _ => match self.section(sec) {
                    Some(s) => Some(s.get(opt).map(|v| v.text.clone())),
                    None => continue,
                },
            };
            let v = match from_section {
                Some(Some(v)) => Some(v),
                _ => self.defaults.get(opt).map(|v| v.text.clone()),
            };
            if let Some(v) = v {
                map.insert(name.to_string(), v);
            }
        }
    }

    fn interpolate(
        &self,
        section: &str,
        option: &str,
        rest: &str,
        map: &Vars,
        depth: usize,
        out: &mut String,
    ) -> Result<(), IniError> {
        let fail = |m: String| IniError::Interpolation {
            section: section.to_string(),
            option: option.to_string(),
            message: m,
            origin: self.origin(section, option),
        };
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(fail(format!(
                "%(...)s references nest deeper than {MAX_INTERPOLATION_DEPTH} (a reference cycle?)"
            )));
        }
        let mut rest = rest;
        while !rest.is_empty() {
            let Some(p) = rest.find('%') else {
                out.push_str(rest);
                return Ok(());
            };
            out.push_str(&rest[..p]);
            rest = &rest[p..];
            match rest.as_bytes().get(1) {
                Some(b'%') => {
                    out.push('%');
                    rest = &rest[2..];
                }
                Some(b'(') => {
                    let Some(e) = rest
                        .find(")s")
                        .filter(|&e| e > 2 && !rest[2..e].contains(')'))
                    else {
                        return Err(fail(format!(
                            "bad interpolation variable reference {rest:?}"
                        )));
                    };
                    let var = rest[2..e].to_lowercase();
                    rest = &rest[e + 2..];
                    let v = match map.get(&var) {
                        Some(v) => v.clone(),
                        None => match self.get_raw(section, &var, &Vars::new()) {
                            Lookup::Found(v) => v,
                            _ => {
                                return Err(fail(format!(
                                    "%({var})s refers to an option that is not defined"
                                )));
                            }
                        },
                    };
                    if v.contains('%') {
                        // fail2ban maps `%(section/name)s` again at every depth.
                        let mut inner = map.clone();
                        self.map_section_options(section, &v, &mut inner);
                        self.interpolate(section, option, &v, &inner, depth + 1, out)?;
                    } else {
                        out.push_str(&v);
                    }
                }
                _ => {
                    return Err(fail(format!(
                        "'%' must be followed by '%' or '(', found: {rest:?}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `section/option` as fail2ban's `SECTION_OPTNAME_CRE` takes it.
pub fn section_option(s: &str) -> Option<(&str, &str)> {
    let (sec, opt) = s.split_once('/')?;
    let ok_sec = !sec.is_empty()
        && sec
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let ok_opt = !opt.is_empty() && !opt.chars().any(|c| c.is_whitespace() || c == '>');
    (ok_sec && ok_opt).then_some((sec, opt))
}

/// `name?cond` section names (fail2ban's conditional sections).
fn conditional(name: &str) -> Option<(&str, &str)> {
    let q = name.find('?')?;
    let (n, c) = name.split_at(q);
    (!n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_') && c.len() > 1)
        .then_some((n, c))
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn sorted_glob(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == ext)
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn values_comments_and_continuations() {
        let text = "[Definition]\n# c\nfailregex = a  ; inline\n            b;not a comment\n\n   # comment line inside\n            c\n\nKey : v\n  w\nignoreregex =\n";
        let p = parse(text, Path::new("f.conf")).unwrap();
        let d = p.section("Definition").unwrap();
        assert_eq!(d.get("failregex").unwrap().text, "a\nb;not a comment\n\nc");
        assert_eq!(d.get("failregex").unwrap().origin.line, 3);
        assert_eq!(d.get("key").unwrap().text, "v\nw");
        assert_eq!(d.get("ignoreregex").unwrap().text, "");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse("[a]\nx = 1\nx = 2\n", Path::new("f.conf")).unwrap_err();
        assert!(e.to_string().starts_with("f.conf:3:"), "{e}");
        let e = parse("x = 1\n", Path::new("f.conf")).unwrap_err();
        assert!(e.to_string().starts_with("f.conf:1:"), "{e}");
        let e = parse("[a]\njunk\n", Path::new("f.conf")).unwrap_err();
        assert!(e.to_string().starts_with("f.conf:2:"), "{e}");
    }

    #[test]
    fn includes_local_and_known() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "common.conf",
            "[INCLUDES]\nafter = common.local\n[DEFAULT]\n_daemon = \\S*\npfx = <_daemon>:\n",
        );
        write(
            d.path(),
            "f.conf",
            "[INCLUDES]\nbefore = common.conf\n         missing.conf\n[Definition]\nfailregex = %(pfx)s a\nx = %(__name__)s/%(lt_file/y)s\n[lt_file]\ny = Y\n",
        );
        write(
            d.path(),
            "f.local",
            "[Definition]\nfailregex = %(known/failregex)s\n            b\n",
        );
        let cfg = Config::read_base(&d.path().join("f")).unwrap().unwrap();
        assert_eq!(cfg.files.len(), 3, "{:?}", cfg.files);
        assert_eq!(cfg.missing.len(), 1);
        let v = Vars::new();
        assert_eq!(
            cfg.get("Definition", "failregex", &v).unwrap(),
            Lookup::Found("<_daemon>: a\nb".into())
        );
        assert_eq!(
            cfg.get("Definition", "x", &v).unwrap(),
            Lookup::Found("Definition/Y".into())
        );
        assert_eq!(
            cfg.get_ex("Definition", "lt_file/y", &v).unwrap(),
            Lookup::Found("Y".into())
        );
        assert_eq!(cfg.get("Nope", "x", &v).unwrap(), Lookup::NoSection);
        assert_eq!(cfg.get("Definition", "nope", &v).unwrap(), Lookup::NoOption);
    }

    #[test]
    fn cycles_and_missing_references_are_errors() {
        let p = Path::new("c.conf");
        let parsed = parse("[s]\na = %(b)s\nb = %(a)s\nc = %(nope)s\nd = 100%\n", p).unwrap();
        let cfg = Config {
            defaults: parsed.defaults,
            sections: parsed.sections,
            ..Config::default()
        };
        let v = Vars::new();
        let e = cfg.get("s", "a", &v).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        assert!(cfg.get("s", "c", &v).is_err());
        assert!(cfg.get("s", "d", &v).is_err());
    }
}

//! fail2ban's own configuration, read as fail2ban reads it: filter.d and
//! jail files in its INI dialect, its regexes (Python's), its date
//! templates, turned into this agent's filters and jails.
pub mod dates;
pub mod filterconf;
pub mod ini;
pub mod jails;
pub mod pyre;
pub mod steer;
pub mod tags;

use std::path::Path;

use crate::config::{Config, ConfigError, Problem};

/// A fail2ban configuration directory as the agent's configuration, with
/// what it does differently from fail2ban (each warning names file:line).
pub fn load_config(dir: &Path) -> Result<(Config, Vec<jails::Warning>), ConfigError> {
    let loaded = jails::load(dir).map_err(|e| {
        ConfigError::Invalid(vec![Problem {
            file: dir.display().to_string(),
            line: 0,
            key: "jail".into(),
            message: e.to_string(),
        }])
    })?;
    let mut warnings = loaded.warnings;
    warnings.extend(steer::warnings(&loaded.filters));
    if loaded.config.jails.is_empty() {
        let mut problems: Vec<Problem> = warnings
            .iter()
            .map(|w| Problem {
                file: w.origin.as_ref().map_or_else(
                    || dir.display().to_string(),
                    |o| o.file.display().to_string(),
                ),
                line: w.origin.as_ref().map_or(0, |o| o.line),
                key: w.jail.clone().unwrap_or_else(|| "jail".into()),
                message: w.message.clone(),
            })
            .collect();
        problems.push(Problem {
            file: dir.join("jail.conf").display().to_string(),
            line: 0,
            key: "enabled".into(),
            message: "no jail is enabled (or every enabled jail was skipped)".into(),
        });
        return Err(ConfigError::Invalid(problems));
    }
    Ok((loaded.config, warnings))
}

/// A fail2ban filter named in a native configuration:
/// `fail2ban:/etc/fail2ban/filter.d/postfix.conf[mode=auth, usedns=no]`
/// (a relative path is taken from `dir`).
pub fn filter_from_spec(spec: &str, dir: &Path) -> Result<crate::filter::Filter, String> {
    let (path, mut opts) = tags::extract_options(spec).map_err(|e| e.to_string())?;
    let usedns = opts
        .iter()
        .position(|(k, _)| k == "usedns")
        .map(|i| opts.remove(i).1);
    let path = dir.join(path);
    let f = filterconf::FilterReader::open_file(&path, opts)
        .and_then(|r| r.resolve(&ini::Vars::new(), "auto"))
        .map_err(|e| format!("fail2ban filter {}: {e}", path.display()))?;
    let name = f.name.clone();
    crate::filter::Filter::from_fail2ban(&name, &f, usedns.as_deref()).map_err(|e| e.to_string())
}

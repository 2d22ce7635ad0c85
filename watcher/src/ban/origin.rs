//! Where a ban comes from: a jail, an operator, a blocklist file, CrowdSec.
//! Every ban carries one; `list`, `explain` and the logs show it, and the
//! state store keeps one claim per (network, origin), so lifting one origin's
//! ban (a CrowdSec decision deleted) leaves the others (a jail's) in force.
use std::fmt;

use serde::{Deserialize, Serialize};

use fail2xdp_common::JAIL_NAME_LEN;

/// Longest label written to the data plane's JAILS map (what `bpftool`
/// shows); the state store keeps the full origin.
pub const LABEL_LEN: usize = JAIL_NAME_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a jail name cannot be empty")]
    Empty,
    #[error("jail name `{}` is longer than {JAIL_NAME_LEN} bytes", .0.escape_default())]
    TooLong(String),
    #[error(
        "jail name `{}` has characters other than letters, digits, '-', '_' and '.'",
        .0.escape_default()
    )]
    BadChar(String),
    #[error("`manual` is reserved for bans made by hand")]
    Reserved,
    #[error("`{}` is not an origin (a jail name, manual, file:NAME or crowdsec/ORIGIN)", .0.escape_default())]
    BadOrigin(String),
    #[error("the name in `{}` is empty, too long or not printable", .0.escape_default())]
    BadDetail(String),
}

/// A validated jail name: 1 to 32 bytes of letters, digits, `-`, `_`, `.`,
/// so it fits the data plane's label and prints safely anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JailName(String);

impl JailName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > JAIL_NAME_LEN {
            return Err(NameError::TooLong(name.to_owned()));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(NameError::BadChar(name.to_owned()));
        }
        if name == MANUAL {
            return Err(NameError::Reserved);
        }
        Ok(JailName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JailName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        JailName::new(&s)
    }
}

impl From<JailName> for String {
    fn from(j: JailName) -> String {
        j.0
    }
}

impl fmt::Display for JailName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const MANUAL: &str = "manual";
const FILE: &str = "file:";
const CROWDSEC: &str = "crowdsec/";
/// Longest file name or CrowdSec origin kept in an origin.
const MAX_DETAIL: usize = 200;

/// Who asked for a ban.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Origin {
    /// A jail, from its failures (or an operator banning in its name).
    Jail(JailName),
    /// `fail2xdp ban ADDR`.
    Manual,
    /// `fail2xdp ban --file NAME`: the file's name (not its path).
    File(String),
    /// A CrowdSec decision, with the decision's own origin (`CAPI`, `cscli`, ...).
    CrowdSec(String),
}

impl Origin {
    /// Parses a label as [`fmt::Display`] writes it.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let detail = |d: &str| {
            if d.is_empty() || d.len() > MAX_DETAIL || d.chars().any(char::is_control) {
                Err(NameError::BadDetail(s.to_owned()))
            } else {
                Ok(d.to_owned())
            }
        };
        if s == MANUAL {
            Ok(Origin::Manual)
        } else if let Some(f) = s.strip_prefix(FILE) {
            Ok(Origin::File(detail(f)?))
        } else if let Some(c) = s.strip_prefix(CROWDSEC) {
            Ok(Origin::CrowdSec(detail(c)?))
        } else if s.contains([':', '/']) {
            Err(NameError::BadOrigin(s.to_owned()))
        } else {
            Ok(Origin::Jail(JailName::new(s)?))
        }
    }

    /// The origin of `ban --file PATH`: the file's own name, `-` for stdin.
    pub fn file(path: &std::path::Path) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let name: String = name
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(MAX_DETAIL)
            .collect();
        Origin::File(if name.is_empty() { "-".into() } else { name })
    }

    pub fn jail(&self) -> Option<&JailName> {
        match self {
            Origin::Jail(j) => Some(j),
            _ => None,
        }
    }

    /// The label kept in the data plane's JAILS map: the origin, cut to
    /// [`LABEL_LEN`] bytes (jail names always fit).
    pub fn map_label(&self) -> String {
        let mut s = self.to_string();
        if s.len() > LABEL_LEN {
            let mut end = LABEL_LEN;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Jail(j) => f.write_str(j.as_str()),
            Origin::Manual => f.write_str(MANUAL),
            Origin::File(n) => write!(f, "{FILE}{n}"),
            Origin::CrowdSec(o) => write!(f, "{CROWDSEC}{o}"),
        }
    }
}

impl TryFrom<String> for Origin {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Origin::parse(&s)
    }
}

impl From<Origin> for String {
    fn from(o: Origin) -> String {
        o.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_names_are_checked_not_cut() {
        assert!(JailName::new("postfix-sasl").is_ok());
        assert!(JailName::new("a.b_c-9").is_ok());
        assert_eq!(JailName::new(""), Err(NameError::Empty));
        assert!(matches!(
            JailName::new(&"x".repeat(33)),
            Err(NameError::TooLong(_))
        ));
        assert!(JailName::new(&"x".repeat(32)).is_ok());
        for bad in ["a b", "a\nb", "\u{1b}[31m", "é", "a/b", "a:b"] {
            assert!(
                matches!(JailName::new(bad), Err(NameError::BadChar(_))),
                "{bad:?}"
            );
        }
        assert_eq!(JailName::new("manual"), Err(NameError::Reserved));
        // The message shows control characters escaped.
        let e = JailName::new("a\u{1b}b").unwrap_err().to_string();
        assert!(!e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn origins_round_trip_through_their_labels() {
        for o in [
            Origin::Jail(JailName::new("sasl").unwrap()),
            Origin::Manual,
            Origin::File("blocklist.txt".into()),
            Origin::CrowdSec("CAPI".into()),
        ] {
            assert_eq!(Origin::parse(&o.to_string()).unwrap(), o);
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Origin>(&json).unwrap(), o);
        }
        assert!(Origin::parse("file:").is_err());
        assert!(Origin::parse("what:ever").is_err());
        assert!(Origin::parse("file:a\u{7}").is_err());
        let long = Origin::File("x".repeat(100));
        assert_eq!(long.map_label().len(), LABEL_LEN);
        assert_eq!(
            Origin::file(std::path::Path::new("/etc/lists/bad.txt")),
            Origin::File("bad.txt".into())
        );
        assert_eq!(
            Origin::file(std::path::Path::new("-")),
            Origin::File("-".into())
        );
    }
}

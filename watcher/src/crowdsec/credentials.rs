//! The keys: a bouncer's API key (`cscli bouncers add NAME -o raw`) and a
//! machine's login, read from the credentials file `cscli machines add NAME
//! --password P -f FILE` writes (`url:`, `login:`, `password:` lines of
//! flat YAML). Secrets never appear in `Debug` output or messages.
use std::fmt;

/// A secret string: compared and used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// A machine login, as cscli writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub url: Option<String>,
    pub login: String,
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("line {0}: expected `key: value`")]
    Syntax(usize),
    #[error("no `{0}:` line")]
    Missing(&'static str),
    #[error("`{0}` is empty or has control characters")]
    Bad(&'static str),
}

impl Credentials {
    /// Reads the flat YAML cscli writes; other keys (`ca_cert_path`, ...)
    /// are ignored.
    pub fn parse(text: &str) -> Result<Self, CredentialsError> {
        let (mut url, mut login, mut password) = (None, None, None);
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') || t == "---" {
                continue;
            }
            let (k, v) = t.split_once(':').ok_or(CredentialsError::Syntax(i + 1))?;
            let v = unquote(v.trim());
            match k.trim() {
                "url" => url = Some(v),
                "login" => login = Some(v),
                "password" => password = Some(v),
                _ => {}
            }
        }
        let login = login.ok_or(CredentialsError::Missing("login"))?;
        let password = password.ok_or(CredentialsError::Missing("password"))?;
        if !header_safe(&login) {
            return Err(CredentialsError::Bad("login"));
        }
        if password.is_empty() || password.chars().any(char::is_control) {
            return Err(CredentialsError::Bad("password"));
        }
        Ok(Credentials {
            url: url.filter(|u| !u.is_empty()),
            login,
            password: Secret(password),
        })
    }
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_owned();
        }
    }
    v.to_owned()
}

/// Non-empty printable ASCII: safe to send in an HTTP header.
pub fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_cscli_writes() {
        let c = Credentials::parse("url: http://127.0.0.1:38490\nlogin: m1\npassword: secretpw\n")
            .unwrap();
        assert_eq!(c.url.as_deref(), Some("http://127.0.0.1:38490"));
        assert_eq!(c.login, "m1");
        assert_eq!(c.password.expose(), "secretpw");
        let c =
            Credentials::parse("# c\nlogin: 'a'\npassword: \"p w\"\nca_cert_path: /x\n").unwrap();
        assert_eq!((c.url.as_deref(), c.login.as_str()), (None, "a"));
        assert_eq!(c.password.expose(), "p w");
        assert!(
            !format!("{c:?}").contains("p w"),
            "the password is never printed"
        );
    }

    #[test]
    fn says_what_is_wrong() {
        assert_eq!(
            Credentials::parse("login: a\n"),
            Err(CredentialsError::Missing("password"))
        );
        assert_eq!(
            Credentials::parse("login a\n"),
            Err(CredentialsError::Syntax(1))
        );
        assert_eq!(
            Credentials::parse("login: a b\npassword: x\n"),
            Err(CredentialsError::Bad("login"))
        );
    }
}

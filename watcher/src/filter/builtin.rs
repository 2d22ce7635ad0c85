//! The built-in mail filters, written for this project from the daemons' log
//! formats and embedded so the agent runs without filter files.

pub const NAMES: &[&str] = &[
    "postfix-sasl",
    "postfix-auth-flood",
    "postfix-noqueue",
    "postfix-rbl",
    "postfix-ddos",
    "dovecot",
    "kerio",
];

pub fn source(name: &str) -> Option<&'static str> {
    Some(match name {
        "postfix-sasl" => include_str!("builtin/postfix-sasl.toml"),
        "postfix-auth-flood" => include_str!("builtin/postfix-auth-flood.toml"),
        "postfix-noqueue" => include_str!("builtin/postfix-noqueue.toml"),
        "postfix-rbl" => include_str!("builtin/postfix-rbl.toml"),
        "postfix-ddos" => include_str!("builtin/postfix-ddos.toml"),
        "dovecot" => include_str!("builtin/dovecot.toml"),
        "kerio" => include_str!("builtin/kerio.toml"),
        _ => return None,
    })
}

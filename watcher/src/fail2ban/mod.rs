//! fail2ban's own configuration, read as fail2ban reads it: filter.d and
//! jail files in its INI dialect, its regexes (Python's), its date
//! templates, turned into this agent's filters and jails.
pub mod dates;
pub mod filterconf;
pub mod ini;
pub mod jails;
pub mod pyre;
pub mod tags;

//! OWNER H6: jails: count failures per host, decide bans.

//! OWNER H6: TOML configuration (jails, sources, filters), validation with file:line:key.

//! OWNER H4: log timestamp parsing (syslog, RFC 3339, journal).

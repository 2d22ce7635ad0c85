//! OWNER H4: failregex engine and built-in mail filters.

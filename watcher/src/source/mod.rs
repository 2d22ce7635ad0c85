//! OWNER H5: log sources (tailed files, systemd journal).

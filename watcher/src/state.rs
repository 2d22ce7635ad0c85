//! OWNER H6: crash-safe ban metadata store.

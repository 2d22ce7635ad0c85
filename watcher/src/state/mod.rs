//! Crash-safe ban metadata: why each ban exists (jail, reason, the lines that
//! did it) and how often each host was banned, kept across restarts and crashes.
//! The kernel maps hold what is enforced; this store holds the explanation and
//! lets the agent restore bans after a reboot cleared the maps. The same database
//! keeps where each log source had got to (positions.rs).
mod explain;
mod positions;
mod record;
mod store;

pub use explain::{ExplainedBan, Explanation, Tracking};
pub use positions::PositionBook;
pub use record::{BanRecord, DecodeError, MAX_EVIDENCE_LINE_BYTES, MAX_EVIDENCE_LINES};
pub use store::{
    DB_FILE, MAX_HISTORY_PER_HOST, StateError, Store, record_manual, record_manual_many,
    remove_manual,
};

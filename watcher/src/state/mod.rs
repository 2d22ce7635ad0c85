//! Crash-safe ban metadata: why each ban exists (origin, reason, the lines
//! that did it), how often each network was banned, and the blocklists
//! imported, kept across restarts and crashes. The kernel maps hold what is
//! enforced; this store holds the explanation and lets the ban service put
//! every ban back after a reboot emptied the maps. The same database keeps
//! where each log source had got to (positions.rs).
mod explain;
mod imports;
mod positions;
mod record;
mod store;
mod writer;

pub use explain::{ExplainedBan, Explanation, Tracking, printable};
pub use imports::ImportHeader;
pub use positions::PositionBook;
pub use record::{
    BanRecord, DecisionRef, DecodeError, MAX_EVIDENCE_LINE_BYTES, MAX_EVIDENCE_LINES,
};
pub use store::{DB_FILE, MAX_HISTORY_PER_HOST, Recovered, StateError, Store};
pub use writer::{Health, StateWriter};

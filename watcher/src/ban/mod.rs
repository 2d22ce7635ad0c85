//! The ban service: the one path every ban and unban takes, whatever asked
//! for it (a jail, `fail2xdp ban`, `ban --file`, the bans restored at start,
//! CrowdSec). It checks the [`Guard`], works out the length (a repeat
//! offender's grows), merges with a ban already in force (a ban never
//! shrinks by accident), writes the maps through the enforcer, records the
//! claim in the state store, and emits one [`BanEvent`].
//!
//! Where a log line becomes a ban: source -> match stage
//! (agent/matcher.rs) -> jail (agent/engine.rs counts) -> here -> enforcer.
mod event;
mod guard;
mod order;
mod origin;
mod service;

pub use event::{BanEvent, Banned, LogEvents, Subscriber};
pub use guard::{Guard, PrefixLimits, Protected, Refusal};
pub use order::{
    Applied, BanLength, FromJail, ImportReport, ImportSpec, JailRules, LONGEST_BAN, ManualBan,
    Order, Outcome, RestoreReport, UnbanAllReport, UnbanOutcome, check_length, describe,
};
pub use origin::{JailName, LABEL_LEN, NameError, Origin};
pub use service::{BanError, BanService, JailBan, Persist, Policy, ServiceStats};

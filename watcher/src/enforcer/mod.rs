//! OWNER H2: the only writer of the pinned BPF maps: load/attach/pin/detach and ban/unban/list.

/// Placeholder until H2 lands the real type.
pub struct Enforcer;

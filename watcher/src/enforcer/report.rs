//! How the data plane's counters are shown, one shape for the CLI and the agent.
use fail2xdp_common::Stats;
use serde_json::{Value, json};

/// The summed per-CPU counters as JSON, field names as in `Stats`.
pub fn stats_json(s: &Stats) -> Value {
    json!({
        "pass_pkts": s.pass_pkts, "pass_bytes": s.pass_bytes,
        "drop_pkts": s.drop_pkts, "drop_bytes": s.drop_bytes,
        "drop_exact_v4": s.drop_exact_v4, "drop_exact_v6": s.drop_exact_v6,
        "drop_prefix_v4": s.drop_prefix_v4, "drop_prefix_v6": s.drop_prefix_v6,
        "pass_allowlisted": s.pass_allowlisted, "pass_unparsed": s.pass_unparsed,
        "pass_expired": s.pass_expired, "pass_other_port": s.pass_other_port,
    })
}

//! The Local API's messages, typed: what the bouncer reads from
//! `GET /v1/decisions/stream` and what the decision source sends to
//! `POST /v1/watchers/login` and `POST /v1/alerts` (CrowdSec's models
//! `Decision`, `Alert`, `Event`, `Source`, `Meta` as LAPI 1.4 takes them).
//! Answers are checked field by field: a wrong type anywhere refuses the
//! whole answer, and the bans in force stay.
use serde::{Deserialize, Serialize};

/// `GET /v1/decisions/stream`: decisions new since the last pull of this
/// bouncer key (all active ones with `startup=true`), and those deleted or
/// expired since. LAPI writes `null` for an empty list.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DecisionStream {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub new: Vec<Decision>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub deleted: Vec<Decision>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Decision>, D::Error> {
    Ok(Option::<Vec<Decision>>::deserialize(d)?.unwrap_or_default())
}

/// One decision. `duration` is the time left when LAPI answered (negative
/// for a deleted or expired one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// None in a decision sent: LAPI numbers it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: i64,
    pub origin: String,
    /// `ban`, `captcha`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `Ip`, `Range`, `Country`, `AS`, ...
    pub scope: String,
    pub value: String,
    pub duration: String,
    pub scenario: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

fn is_zero(i: &i64) -> bool {
    *i == 0
}

/// `POST /v1/watchers/login`.
#[derive(Debug, Clone, Serialize)]
pub struct Login<'a> {
    pub machine_id: &'a str,
    pub password: &'a str,
    pub scenarios: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoginAnswer {
    pub token: String,
    /// RFC 3339.
    #[serde(default)]
    pub expire: Option<String>,
}

/// One alert of `POST /v1/alerts` (the body is a list of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub scenario: String,
    pub scenario_hash: String,
    pub scenario_version: String,
    pub message: String,
    pub events_count: i32,
    /// RFC 3339.
    pub start_at: String,
    pub stop_at: String,
    pub capacity: i32,
    pub leakspeed: String,
    pub simulated: bool,
    pub events: Vec<Event>,
    pub source: Source,
    pub decisions: Vec<Decision>,
    pub remediation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub timestamp: String,
    pub meta: Vec<Meta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub scope: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub range: String,
}

/// An error answer: `{"message": "..."}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorAnswer {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_stream_answer() {
        // As LAPI 1.4.6 answered in a test run.
        let s: DecisionStream = serde_json::from_str(
            r#"{"deleted":[{"duration":"-21.399584ms","id":1,"origin":"cscli","scenario":"manual 'ban' from 'cscli'","scope":"Ip","type":"ban","value":"198.51.100.7"}],
                "new":null}"#,
        )
        .unwrap();
        assert!(s.new.is_empty());
        assert_eq!(s.deleted[0].id, 1);
        assert_eq!(s.deleted[0].kind, "ban");
        let s: DecisionStream = serde_json::from_str(r#"{"deleted":null,"new":null}"#).unwrap();
        assert_eq!(s, DecisionStream::default());
    }

    #[test]
    fn wrong_types_refuse_the_answer() {
        for bad in [
            r#"{"new":[{"id":"x","origin":"cscli","type":"ban","scope":"Ip","value":"192.0.2.1","duration":"1h","scenario":"s"}]}"#,
            r#"{"new":[{"id":1,"origin":7,"type":"ban","scope":"Ip","value":"192.0.2.1","duration":"1h","scenario":"s"}]}"#,
            r#"{"new":[{"id":1,"origin":"o","type":"ban","scope":"Ip","duration":"1h","scenario":"s"}]}"#,
            r#"{"new":{"id":1}}"#,
            r#"[1,2,3]"#,
            r#""new""#,
        ] {
            assert!(
                serde_json::from_str::<DecisionStream>(bad).is_err(),
                "{bad}"
            );
        }
    }
}

//! "Did you mean" for a mistyped key: serde names the unknown field and the
//! ones it expected; the closest of those, if close enough, is the hint.

/// `msg` with a hint appended when it is serde's unknown-field complaint
/// and one expected key is within a typo or two of the given one.
pub fn did_you_mean(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_string();
    };
    let Some((given, expected)) = rest.split_once('`') else {
        return msg.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (strsim::damerau_levenshtein(given, k), k))
        .filter(|(d, k)| *d <= 2.max(given.len() / 4) && *d < k.len())
        .min();
    match best {
        Some((_, k)) => format!("{msg}; did you mean `{k}`?"),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_get_a_hint() {
        let m =
            "unknown field `maxrety`, expected one of `enabled`, `filter`, `maxretry`, `findtime`";
        assert!(
            did_you_mean(m).ends_with("did you mean `maxretry`?"),
            "{}",
            did_you_mean(m)
        );
        let m = "unknown field `bantim`, expected one of `bantime`, `findtime`";
        assert!(did_you_mean(m).ends_with("did you mean `bantime`?"));
        let m = "unknown field `colour`, expected one of `enabled`, `filter`";
        assert_eq!(did_you_mean(m), m);
        assert_eq!(did_you_mean("invalid type"), "invalid type");
    }
}

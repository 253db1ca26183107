//! Topic patterns: `*` matches any run of characters. The one syntax of
//! `--read-token` rules, of a JWT's topic claims and of `--retention` rules.

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters. Hand-written: topic names have no path structure for a
/// path-glob crate to use, and this is the whole of it.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether any of `patterns` matches `name`.
pub(crate) fn any_matches<S: AsRef<str>>(patterns: &[S], name: &str) -> bool {
    patterns.iter().any(|p| matches(p.as_ref(), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_of_characters() {
        for (pattern, name, expected) in [
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "ac", true),
            ("a*b*c", "a-b-c", true),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("a*c", "abd", false),
            ("ab*bc", "abc", false),
            ("*", "", true),
        ] {
            assert_eq!(matches(pattern, name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn any_of_several_patterns_matches() {
        assert!(any_matches(&["a.*", "b"], "b"));
        assert!(!any_matches::<&str>(&[], "b"));
    }
}

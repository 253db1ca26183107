//! Bearer tokens: who may publish, and who may read which topics.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time
//! (the digest makes the comparison independent of the tokens' lengths),
//! and they never reach a log: [`Secret`] prints as `***`. With no publish
//! token configured, publishing is open. A topic matching no read rule is
//! open to read.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token from the configuration; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("a token cannot be empty".to_owned());
        }
        Ok(Self(s.to_owned()))
    }
}

impl Secret {
    /// The token itself, for the one place that must read it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A read rule from the configuration: `PATTERN=TOKEN`, where `*` in the
/// pattern matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRule {
    pattern: String,
    token: Secret,
}

impl FromStr for ReadRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (pattern, token) = s
            .split_once('=')
            .ok_or_else(|| "expected PATTERN=TOKEN, such as private.*=TOKEN".to_owned())?;
        if pattern.is_empty() {
            return Err("the topic pattern cannot be empty".to_owned());
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            token: token.parse()?,
        })
    }
}

/// Why access was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token was presented (HTTP 401).
    Missing,
    /// A token was presented and is not valid for this (HTTP 403).
    Wrong,
}

type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `presented` is among `allowed`, in time independent of which (if
/// any) matches.
fn any_matches(allowed: &[TokenDigest], presented: &TokenDigest) -> bool {
    allowed
        .iter()
        .fold(subtle::Choice::from(0), |found, token| {
            found | token.ct_eq(presented)
        })
        .into()
}

/// The access rules.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    publish: Vec<TokenDigest>,
    read: Vec<(String, TokenDigest)>,
}

impl Auth {
    /// Rules from the configured publish tokens and read rules.
    pub fn new(publish_tokens: &[Secret], read_rules: &[ReadRule]) -> Self {
        Self {
            publish: publish_tokens.iter().map(|t| digest(&t.0)).collect(),
            read: read_rules
                .iter()
                .map(|r| (r.pattern.clone(), digest(&r.token.0)))
                .collect(),
        }
    }

    /// Whether anyone may publish (no publish token is configured).
    pub fn publishing_is_open(&self) -> bool {
        self.publish.is_empty()
    }

    /// Whether the bearer of `token` may publish.
    ///
    /// # Errors
    ///
    /// [`Denied`] when publish tokens are configured and `token` is none of
    /// them.
    pub fn may_publish(&self, token: Option<&str>) -> Result<(), Denied> {
        if self.publishing_is_open() {
            return Ok(());
        }
        check(&self.publish, token)
    }

    /// Whether the bearer of `token` may read `topic`.
    ///
    /// # Errors
    ///
    /// [`Denied`] when `topic` matches read rules and `token` fits none.
    pub fn may_read(&self, topic: &str, token: Option<&str>) -> Result<(), Denied> {
        let allowed: Vec<TokenDigest> = self
            .read
            .iter()
            .filter(|(pattern, _)| glob_matches(pattern, topic))
            .map(|(_, token)| *token)
            .collect();
        if allowed.is_empty() {
            return Ok(());
        }
        check(&allowed, token)
    }
}

fn check(allowed: &[TokenDigest], token: Option<&str>) -> Result<(), Denied> {
    let token = token.ok_or(Denied::Missing)?;
    if any_matches(allowed, &digest(token)) {
        Ok(())
    } else {
        Err(Denied::Wrong)
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters. Hand-written: topic names have no path structure for a
/// path-glob crate to use, and this is the whole of it.
fn glob_matches(pattern: &str, name: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(tokens: &[&str]) -> Vec<Secret> {
        tokens.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn publishing_is_open_without_tokens_and_guarded_with_them() {
        assert_eq!(Auth::default().may_publish(None), Ok(()));
        let auth = Auth::new(&secrets(&["alpha", "beta"]), &[]);
        assert_eq!(auth.may_publish(None), Err(Denied::Missing));
        assert_eq!(auth.may_publish(Some("gamma")), Err(Denied::Wrong));
        assert_eq!(auth.may_publish(Some("alph")), Err(Denied::Wrong));
        assert_eq!(auth.may_publish(Some("beta")), Ok(()));
    }

    #[test]
    fn read_rules_guard_only_the_topics_they_match() {
        let rules: Vec<ReadRule> = ["private.*=k1", "*.secret=k2"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let auth = Auth::new(&[], &rules);
        assert_eq!(auth.may_read("public.news", None), Ok(()));
        assert_eq!(auth.may_read("private.x", None), Err(Denied::Missing));
        assert_eq!(auth.may_read("private.x", Some("k2")), Err(Denied::Wrong));
        assert_eq!(auth.may_read("private.x", Some("k1")), Ok(()));
        assert_eq!(auth.may_read("private.secret", Some("k2")), Ok(()));
    }

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
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn secrets_never_print_and_rules_parse() {
        let rule: ReadRule = "p.*=top-secret".parse().unwrap();
        assert!(!format!("{rule:?}").contains("top-secret"));
        assert!("no-equals".parse::<ReadRule>().is_err());
        assert!("=tok".parse::<ReadRule>().is_err());
        assert!("p=".parse::<ReadRule>().is_err());
    }
}

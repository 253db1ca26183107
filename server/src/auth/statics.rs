//! Static bearer tokens (`--publish-token`, `--read-token`): who may
//! publish, and who may read which topics.
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

use super::Refusal;
use crate::glob::matches as glob_matches;

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

/// A token's SHA-256 digest.
pub(super) type TokenDigest = [u8; 32];

/// The digest `token` is kept as.
pub(super) fn digest(token: &str) -> TokenDigest {
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

/// The static access rules.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    publish: Vec<TokenDigest>,
    read: Vec<(String, TokenDigest)>,
}

impl StaticTokens {
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

    /// Whether no publish token is configured.
    pub fn publishing_is_open(&self) -> bool {
        self.publish.is_empty()
    }

    /// Whether the bearer of `token` may publish: `Ok(true)` when it is a
    /// publish token, `Ok(false)` when publishing needs none.
    ///
    /// # Errors
    ///
    /// [`Refusal`] when publish tokens are configured and `token` is none of
    /// them.
    pub fn may_publish(&self, token: Option<&str>) -> Result<bool, Refusal> {
        if self.publishing_is_open() {
            return Ok(false);
        }
        check(&self.publish, token).map(|()| true)
    }

    /// Whether the bearer of `token` may read `topic`: `Ok(true)` when a
    /// read rule guards it and `token` fits, `Ok(false)` when no rule
    /// guards it.
    ///
    /// # Errors
    ///
    /// [`Refusal`] when `topic` matches read rules and `token` fits none.
    pub fn may_read(&self, topic: &str, token: Option<&str>) -> Result<bool, Refusal> {
        let allowed: Vec<TokenDigest> = self
            .read
            .iter()
            .filter(|(pattern, _)| glob_matches(pattern, topic))
            .map(|(_, token)| *token)
            .collect();
        if allowed.is_empty() {
            return Ok(false);
        }
        check(&allowed, token).map(|()| true)
    }
}

fn check(allowed: &[TokenDigest], token: Option<&str>) -> Result<(), Refusal> {
    let token = token.ok_or(Refusal::Missing)?;
    if any_matches(allowed, &digest(token)) {
        Ok(())
    } else {
        Err(Refusal::WrongToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(tokens: &[&str]) -> Vec<Secret> {
        tokens.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn publishing_is_open_without_tokens_and_guarded_with_them() {
        assert_eq!(StaticTokens::default().may_publish(None), Ok(false));
        let auth = StaticTokens::new(&secrets(&["alpha", "beta"]), &[]);
        assert_eq!(auth.may_publish(None), Err(Refusal::Missing));
        assert_eq!(auth.may_publish(Some("gamma")), Err(Refusal::WrongToken));
        assert_eq!(auth.may_publish(Some("alph")), Err(Refusal::WrongToken));
        assert_eq!(auth.may_publish(Some("beta")), Ok(true));
    }

    #[test]
    fn read_rules_guard_only_the_topics_they_match() {
        let rules: Vec<ReadRule> = ["private.*=k1", "*.secret=k2"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let auth = StaticTokens::new(&[], &rules);
        assert_eq!(auth.may_read("public.news", None), Ok(false));
        assert_eq!(auth.may_read("private.x", None), Err(Refusal::Missing));
        assert_eq!(
            auth.may_read("private.x", Some("k2")),
            Err(Refusal::WrongToken)
        );
        assert_eq!(auth.may_read("private.x", Some("k1")), Ok(true));
        assert_eq!(auth.may_read("private.secret", Some("k2")), Ok(true));
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

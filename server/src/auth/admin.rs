//! Admin tokens (`--admin-token LABEL=TOKEN`): who may call the admin API
//! (`/admin/…`) and, when any is configured, seed datasets. Each token has
//! a label, which logs and the access log name in its place.
//!
//! Kept as SHA-256 digests and compared in constant time, as the static
//! tokens are ([`super::statics`]).

use std::str::FromStr;
use std::sync::Arc;

use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::Refusal;
use super::statics::{Secret, TokenDigest, digest};

/// Longest label.
const MAX_LABEL: usize = 64;

/// An admin token from the configuration: `LABEL=TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    label: Arc<str>,
    token: Secret,
}

impl FromStr for AdminToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (label, token) = s
            .split_once('=')
            .ok_or_else(|| "expected LABEL=TOKEN, such as ops-alice=TOKEN".to_owned())?;
        let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if label.is_empty() || label.len() > MAX_LABEL || !label.chars().all(fits) {
            return Err(format!(
                "the label must be 1 to {MAX_LABEL} characters of A-Z a-z 0-9 . _ -"
            ));
        }
        Ok(Self {
            label: Arc::from(label),
            token: token.parse()?,
        })
    }
}

/// The admin tokens in force; none means the admin API does not exist.
#[derive(Debug, Clone, Default)]
pub struct AdminTokens {
    tokens: Vec<(Arc<str>, TokenDigest)>,
}

impl AdminTokens {
    /// The configured tokens.
    pub fn new(tokens: &[AdminToken]) -> Self {
        Self {
            tokens: tokens
                .iter()
                .map(|t| (Arc::clone(&t.label), digest(t.token.expose())))
                .collect(),
        }
    }

    /// Whether any admin token is configured.
    pub fn any(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The label of the admin token `token` is, in time independent of
    /// which (if any) it is.
    ///
    /// # Errors
    ///
    /// [`Refusal::Missing`] without a token, [`Refusal::WrongToken`] when
    /// it is no admin token.
    pub fn label_of(&self, token: Option<&str>) -> Result<Arc<str>, Refusal> {
        let presented = digest(token.ok_or(Refusal::Missing)?);
        let (found, index) = self.tokens.iter().enumerate().fold(
            (subtle::Choice::from(0), 0u64),
            |(found, index), (i, (_, token))| {
                let this = token.ct_eq(&presented);
                (
                    found | this,
                    u64::conditional_select(&index, &(i as u64), this),
                )
            },
        );
        if bool::from(found) {
            Ok(Arc::clone(&self.tokens[index as usize].0))
        } else {
            Err(Refusal::WrongToken)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_with_a_label_and_never_print() {
        let token: AdminToken = "ops-alice=s3cret=x".parse().unwrap();
        assert_eq!(&*token.label, "ops-alice");
        assert!(!format!("{token:?}").contains("s3cret"));
        for bad in ["no-equals", "=tok", "ops=", "ops alice=tok", "é=tok"] {
            assert!(bad.parse::<AdminToken>().is_err(), "{bad}");
        }
        assert!(
            format!("{}=t", "x".repeat(65))
                .parse::<AdminToken>()
                .is_err()
        );
    }

    #[test]
    fn a_token_is_known_by_its_label() {
        let tokens: Vec<AdminToken> = ["ops-alice=a1", "ops-bob=b2"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let admin = AdminTokens::new(&tokens);
        assert!(admin.any() && !AdminTokens::default().any());
        assert_eq!(&*admin.label_of(Some("b2")).unwrap(), "ops-bob");
        assert_eq!(&*admin.label_of(Some("a1")).unwrap(), "ops-alice");
        assert_eq!(admin.label_of(Some("a")), Err(Refusal::WrongToken));
        assert_eq!(admin.label_of(None), Err(Refusal::Missing));
    }
}

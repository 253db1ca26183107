//! Credentials as clients count them: why the server refused one (the
//! `reason` of a `401`/`403` answer's JSON body, or of a refused WebSocket
//! refresh), the tokens renewed and those refused, and the streams the
//! server ended because of their token. Exact counters, added like the rest
//! of [`super::Counts`] (and so across worker processes).

use serde::{Deserialize, Serialize};

/// Why the server refused a credential (docs/protocol.md, "JSON Web
/// Tokens"): the `reason` of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No credential.
    Missing,
    /// Not a token the server can read.
    Malformed,
    /// A signature that does not verify.
    BadSignature,
    /// Past its `exp` (and the server's leeway).
    Expired,
    /// Before its `nbf`.
    NotYetValid,
    /// A `kid` the server has no key for.
    UnknownKid,
    /// An algorithm the server does not take for that key.
    AlgorithmNotAllowed,
    /// A claim the server requires is missing.
    MissingClaim,
    /// Not the issuer the server wants.
    BadIssuer,
    /// Not the audience the server wants.
    BadAudience,
    /// Its `jti` or `sub` is on the server's denylist.
    Revoked,
    /// A valid token whose claims do not allow the topic.
    TopicNotAllowed,
    /// A static token that does not fit.
    WrongToken,
    /// A reason this load generator does not know, or none it could read.
    #[serde(other)]
    Other,
}

impl Refusal {
    /// Every reason, in report order.
    pub const ALL: [Refusal; 14] = [
        Refusal::Missing,
        Refusal::Malformed,
        Refusal::BadSignature,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::UnknownKid,
        Refusal::AlgorithmNotAllowed,
        Refusal::MissingClaim,
        Refusal::BadIssuer,
        Refusal::BadAudience,
        Refusal::Revoked,
        Refusal::TopicNotAllowed,
        Refusal::WrongToken,
        Refusal::Other,
    ];

    /// Its key in `summary.json` (`auth.refusals.expired`): the server's
    /// word for it.
    pub fn key(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::UnknownKid => "unknown_kid",
            Refusal::AlgorithmNotAllowed => "algorithm_not_allowed",
            Refusal::MissingClaim => "missing_claim",
            Refusal::BadIssuer => "bad_issuer",
            Refusal::BadAudience => "bad_audience",
            Refusal::Revoked => "revoked",
            Refusal::TopicNotAllowed => "topic_not_allowed",
            Refusal::WrongToken => "wrong_token",
            Refusal::Other => "other",
        }
    }

    /// The reason a refusal's JSON body (`{"error": …, "reason": R}`)
    /// gives; [`Refusal::Other`] if it gives none this reads.
    pub fn of_body(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Body {
            reason: Refusal,
        }
        serde_json::from_slice::<Body>(body).map_or(Refusal::Other, |b| b.reason)
    }
}

/// Why the server ended a live stream because of its token: SSE `end`
/// with this reason, or WebSocket close 4401 / 4403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The token expired while streaming (close 4401).
    TokenExpired,
    /// The token was revoked while streaming (close 4403).
    Revoked,
}

impl Ended {
    /// Every reason, in report order.
    pub const ALL: [Ended; 2] = [Ended::TokenExpired, Ended::Revoked];

    /// Its key in `summary.json` (`auth.ended.token_expired`).
    pub fn key(self) -> &'static str {
        match self {
            Ended::TokenExpired => "token_expired",
            Ended::Revoked => "revoked",
        }
    }

    /// The reason a WebSocket close `code` gives, if it is one of these.
    pub fn of_close(code: u16) -> Option<Self> {
        match code {
            4401 => Some(Ended::TokenExpired),
            4403 => Some(Ended::Revoked),
            _ => None,
        }
    }
}

/// The credential counters of one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCounts {
    /// Tokens renewed on a live stream: a WebSocket refresh answered
    /// `refreshed`, or an SSE stream reopened with a new token.
    pub token_refreshes: u64,
    /// Renewals the server refused (a refresh answered with an error, a
    /// reopened stream refused `401`/`403`).
    pub refreshes_refused: u64,
    /// Requests refused `401`/`403`, by [`Refusal`] in [`Refusal::ALL`]
    /// order.
    pub refusals: [u64; 14],
    /// Streams the server ended because of their token, by [`Ended`] in
    /// [`Ended::ALL`] order.
    pub ended: [u64; 2],
}

impl AuthCounts {
    /// Adds `other` into this.
    pub fn add(&mut self, other: &AuthCounts) {
        self.token_refreshes += other.token_refreshes;
        self.refreshes_refused += other.refreshes_refused;
        for (into, from) in self.refusals.iter_mut().zip(other.refusals) {
            *into += from;
        }
        for (into, from) in self.ended.iter_mut().zip(other.ended) {
            *into += from;
        }
    }

    /// One more refusal for `reason`.
    pub fn refused(&mut self, reason: Refusal) {
        self.refusals[reason as usize] += 1;
    }

    /// One more stream ended for `reason`.
    pub fn ended(&mut self, reason: Ended) {
        self.ended[reason as usize] += 1;
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == AuthCounts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_read_from_bodies_and_added_in_order() {
        for (rank, reason) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, rank, "Refusal order");
            let body = format!(r#"{{"error":"no","reason":"{}"}}"#, reason.key());
            assert_eq!(Refusal::of_body(body.as_bytes()), reason);
        }
        assert_eq!(
            Refusal::of_body(br#"{"reason":"moon_phase"}"#),
            Refusal::Other
        );
        assert_eq!(Refusal::of_body(b"Unauthorized"), Refusal::Other);
        assert_eq!(Ended::of_close(4401), Some(Ended::TokenExpired));
        assert_eq!(Ended::of_close(4403), Some(Ended::Revoked));
        assert_eq!(Ended::of_close(1008), None);
        let mut one = AuthCounts::default();
        one.refused(Refusal::Expired);
        one.ended(Ended::Revoked);
        one.token_refreshes = 2;
        let mut total = one;
        total.add(&one);
        assert_eq!(total.refusals[Refusal::Expired as usize], 2);
        assert_eq!(total.ended, [0, 2]);
        assert_eq!(
            (total.token_refreshes, total.is_empty()),
            (4, false),
            "{total:?}"
        );
    }
}

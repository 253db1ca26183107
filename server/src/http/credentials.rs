//! Where a request carries its token, and the decision on it counted and
//! logged: `Authorization: Bearer …`, else `?token=…` (browsers cannot
//! give an `EventSource` or a WebSocket headers), else, for
//! subscriptions only, the cookie `--jwt-cookie` names (a publish by cookie
//! would be open to cross-site request forgery). The token is only handed
//! to [`crate::auth`]; it is never logged, its subject is.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};

use super::params::Params;
use crate::auth::{Access, Refusal};
use crate::error::ApiError;
use crate::scope::Scope;
use crate::state::AppState;

/// The bearer token of the `Authorization` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The token of a subscription: the header's, else the `token` query
/// parameter's, else the cookie named `cookie`.
pub(crate) fn token<'a>(
    headers: &'a HeaderMap,
    params: &'a Params<'_>,
    cookie: Option<&str>,
) -> Option<&'a str> {
    bearer(headers)
        .or_else(|| params.get("token"))
        .or_else(|| cookie.and_then(|name| cookie_value(headers, name)))
}

/// The value of the cookie `name` in the request's `Cookie` headers.
/// Hand-written: a lookup of one name in `a=b; c=d` is all that is needed.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Turns an access decision about `action` into the request's answer:
/// counts it, notes a JWT's subject in the access log (`scope`) and the
/// log, and refuses with 401 or 403 and the reason.
pub(crate) fn decide(
    state: &AppState,
    scope: Option<&Scope>,
    decision: Result<Access, Refusal>,
    action: &'static str,
) -> Result<Access, ApiError> {
    let metrics = state.metrics.auth();
    match &decision {
        Ok(Access::Token(grant)) => {
            metrics.jwt_accepted();
            if let Some(scope) = scope {
                scope.set_subject(&grant.sub);
            }
            tracing::debug!(sub = %grant.sub, action, "JWT accepted");
        }
        Ok(Access::Admin(label)) => {
            if let Some(scope) = scope {
                scope.set_subject(label);
            }
        }
        Ok(_) => {}
        Err(refusal) => {
            metrics.refused(refusal.label());
            tracing::debug!(reason = refusal.label(), action, "access refused");
        }
    }
    decision.map_err(|refusal| ApiError::denied(refusal, action))
}

/// Refuses publishing to `topic` unless the request's bearer token
/// allows it.
pub(crate) fn require_publisher(
    state: &AppState,
    scope: Option<&Scope>,
    headers: &HeaderMap,
    topic: &str,
) -> Result<Access, ApiError> {
    let decision = state.auth.may_publish(topic, bearer(headers));
    decide(state, scope, decision, "publishing")
}

/// Refuses seeding datasets unless the request's bearer token allows it.
pub(crate) fn require_seeder(
    state: &AppState,
    scope: Option<&Scope>,
    headers: &HeaderMap,
) -> Result<Access, ApiError> {
    let decision = state.auth.may_seed(bearer(headers));
    decide(state, scope, decision, "seeding trades")
}

/// Refuses the admin API unless the request's bearer token is an admin
/// token; returns its label.
pub(crate) fn require_admin(
    state: &AppState,
    scope: Option<&Scope>,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<str>, ApiError> {
    let decision = state.auth.may_administer(bearer(headers));
    match decide(state, scope, decision, "the admin API")? {
        Access::Admin(label) => Ok(label),
        _ => unreachable!("may_administer admits admin tokens only"),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn reads_the_bearer_scheme_case_insensitively_and_falls_back_to_the_query() {
        let mut headers = HeaderMap::new();
        let params = Params::parse(Some("token=q"), &["token"]).unwrap();
        assert_eq!(token(&headers, &params, None), Some("q"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer h"));
        assert_eq!(token(&headers, &params, None), Some("h"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic h"));
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  "));
        assert_eq!(
            bearer(&headers),
            None,
            "an empty token is no token (401, not 403)"
        );
    }

    #[test]
    fn the_cookie_comes_last_and_only_by_its_name() {
        let mut headers = HeaderMap::new();
        let none = Params::parse(None, &["token"]).unwrap();
        headers.append(
            COOKIE,
            HeaderValue::from_static("theme=dark; sg_jwt=abc.def.ghi"),
        );
        headers.append(COOKIE, HeaderValue::from_static("other=1"));
        assert_eq!(token(&headers, &none, Some("sg_jwt")), Some("abc.def.ghi"));
        assert_eq!(token(&headers, &none, None), None, "no cookie configured");
        assert_eq!(token(&headers, &none, Some("jwt")), None);
        let query = Params::parse(Some("token=q"), &["token"]).unwrap();
        assert_eq!(token(&headers, &query, Some("sg_jwt")), Some("q"));
    }
}

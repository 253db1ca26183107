//! Where a request carries its bearer token: `Authorization: Bearer …`, or
//! `?token=…` (for WebSocket upgrades, which browsers cannot give headers).
//! The token is only handed to [`crate::auth`]; it is never logged.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::params::Params;
use crate::auth::Auth;
use crate::error::ApiError;

/// The bearer token of the `Authorization` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The bearer token of the header, else of the `token` query parameter.
pub(crate) fn token<'a>(headers: &'a HeaderMap, params: &'a Params<'_>) -> Option<&'a str> {
    bearer(headers).or_else(|| params.get("token"))
}

/// Refuses `action` (a write, such as "publishing") unless the request's
/// bearer token may publish: 401 without one, 403 with a wrong one.
pub(crate) fn require_publisher(
    auth: &Auth,
    headers: &HeaderMap,
    action: &'static str,
) -> Result<(), ApiError> {
    auth.may_publish(bearer(headers))
        .map_err(|denied| ApiError::denied(denied, action))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn reads_the_bearer_scheme_case_insensitively_and_falls_back_to_the_query() {
        let mut headers = HeaderMap::new();
        let params = Params::parse(Some("token=q"), &["token"]).unwrap();
        assert_eq!(token(&headers, &params), Some("q"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer h"));
        assert_eq!(token(&headers, &params), Some("h"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic h"));
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  "));
        assert_eq!(
            bearer(&headers),
            None,
            "an empty token is no token (401, not 403)"
        );
    }
}

//! Where a request carries its bearer token: `Authorization: Bearer …`, or
//! `?token=…` (for WebSocket upgrades, which browsers cannot give headers).
//! The token is only handed to [`crate::auth`]; it is never logged.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::params::Params;

/// The bearer token of the `Authorization` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The bearer token of the header, else of the `token` query parameter.
pub(crate) fn token<'a>(headers: &'a HeaderMap, params: &'a Params<'_>) -> Option<&'a str> {
    bearer(headers).or_else(|| params.get("token"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn reads_the_bearer_scheme_case_insensitively_and_falls_back_to_the_query() {
        let mut headers = HeaderMap::new();
        let params = Params::parse(Some("token=q")).unwrap();
        assert_eq!(token(&headers, &params), Some("q"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer h"));
        assert_eq!(token(&headers, &params), Some("h"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic h"));
        assert_eq!(bearer(&headers), None);
    }
}

//! CORS: which web origins may read this server's answers from a page, and
//! the `tower-http` layer that answers for them (preflights included).
//!
//! Off by default: without `--cors-origin` no answer carries
//! `Access-Control-*` headers, so a page on another origin cannot read a
//! stream (browsers enforce it); the operator names the origins that may.
//! `*` lets any origin read, without credentials; a list of origins gets
//! credentials too (cookies are not used here, but a proxy in front may).
//! The request headers a streaming page needs are allowed:
//! `Authorization` (bearer tokens), `Last-Event-ID` (an `EventSource`
//! resuming) and `Content-Type` (a JSON publish); `Retry-After` is exposed
//! to the page.
//!
//! CORS governs what pages may *read*; it does not stop a page from
//! opening a WebSocket (browsers apply no CORS to WebSockets) or sending a
//! simple request: publishing is guarded by tokens (docs/security.md).

use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config;

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Which origins may read answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers: only same-origin pages read answers.
    #[default]
    Off,
    /// Any origin, without credentials (`--cors-origin '*'`).
    Any,
    /// These origins, with credentials.
    Origins(Vec<HeaderValue>),
}

impl Cors {
    /// The setting `--cors-origin` values give: none is off, `*` alone is
    /// any origin, otherwise each must be an origin (`scheme://host[:port]`).
    ///
    /// # Errors
    ///
    /// [`config::Error::Invalid`] naming `cors-origin` for a value that is
    /// not an origin, or `*` beside origins.
    pub fn parse(values: Vec<String>) -> Result<Self, config::Error> {
        let invalid = |reason: String| config::Error::Invalid {
            name: "cors-origin",
            reason,
        };
        match values.as_slice() {
            [] => return Ok(Cors::Off),
            [any] if any == "*" => return Ok(Cors::Any),
            _ => {}
        }
        values
            .iter()
            .map(|origin| {
                if origin == "*" {
                    return Err(invalid(
                        "`*` (any origin) cannot be combined with named origins".to_owned(),
                    ));
                }
                check_origin(origin).map_err(|reason| invalid(format!("{origin:?} {reason}")))?;
                HeaderValue::from_str(origin)
                    .map_err(|_| invalid(format!("{origin:?} is not a header value")))
            })
            .collect::<Result<_, _>>()
            .map(Cors::Origins)
    }

    /// The layer answering for these origins, `None` when CORS is off.
    pub fn layer(&self) -> Option<CorsLayer> {
        let base = || {
            CorsLayer::new()
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    AUTHORIZATION,
                    CONTENT_TYPE,
                    HeaderName::from_static("last-event-id"),
                ])
                .expose_headers([RETRY_AFTER])
                .max_age(PREFLIGHT_MAX_AGE)
        };
        match self {
            Cors::Off => None,
            Cors::Any => Some(base().allow_origin(AllowOrigin::any())),
            Cors::Origins(origins) => Some(
                base()
                    .allow_origin(AllowOrigin::list(origins.iter().cloned()))
                    .allow_credentials(true),
            ),
        }
    }
}

/// Why `origin` is not `scheme://host[:port]` with an HTTP scheme.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("is not an origin: it must start with https:// or http://")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return Err("is not an origin: scheme://host[:port], with no path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Cors, String> {
        Cors::parse(values.iter().map(|v| (*v).to_owned()).collect()).map_err(|e| e.to_string())
    }

    #[test]
    fn origins_are_checked_and_star_stands_alone() {
        assert_eq!(parse(&[]).unwrap(), Cors::Off);
        assert_eq!(parse(&["*"]).unwrap(), Cors::Any);
        assert_eq!(
            parse(&["https://app.example", "http://127.0.0.1:8000"]).unwrap(),
            Cors::Origins(vec![
                HeaderValue::from_static("https://app.example"),
                HeaderValue::from_static("http://127.0.0.1:8000"),
            ])
        );
        for bad in [
            &["*", "https://a.example"][..],
            &["app.example"],
            &["https://app.example/"],
            &["https://app.example/path"],
            &["ftp://app.example"],
            &["https://"],
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.starts_with("invalid `cors-origin`"), "{bad:?}: {err}");
        }
        assert!(Cors::Off.layer().is_none());
        assert!(Cors::Any.layer().is_some());
    }
}

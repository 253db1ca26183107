//! Query strings of the endpoints that take parameters. Every parameter the
//! endpoint does not take (a typo), repeated, malformed or out of bounds
//! becomes a `400` naming it, before any stream starts.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use crate::error::ApiError;

/// A parsed query string: each parameter one the endpoint takes, given at
/// most once.
#[derive(Debug, Default)]
pub(crate) struct Params<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Params<'a> {
    /// Parses `raw` (without the `?`) for an endpoint that takes the
    /// parameters `known`: any other is refused (a typo such as `rat=5`
    /// would otherwise stream at the default), and so is a repeated one.
    pub(crate) fn parse(raw: Option<&'a str>, known: &[&str]) -> Result<Self, ApiError> {
        let mut pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if !known.contains(&key.as_ref()) {
                return Err(ApiError::UnknownParam(key.into_owned()));
            }
            // At most `known.len()` pairs: a scan is enough.
            if pairs.iter().any(|(seen, _)| *seen == key) {
                return Err(ApiError::bad_param(&key, "given more than once"));
            }
            pairs.push((key, value));
        }
        Ok(Self(pairs))
    }

    /// The raw value of `name`, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// `tag`, a label the client gives its stream to find it in `GET
    /// /connections`: 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
    pub(crate) fn tag(&self) -> Result<Option<String>, ApiError> {
        let Some(tag) = self.get("tag") else {
            return Ok(None);
        };
        let valid = (1..=64).contains(&tag.len())
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Some(tag.to_owned()))
        } else {
            Err(ApiError::bad_param(
                "tag",
                "must be 1 to 64 characters from A-Z a-z 0-9 . _ -",
            ))
        }
    }

    /// The integer parameter `name`, `default` when absent, within `range`.
    pub(crate) fn u64_in(
        &self,
        name: &str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ApiError> {
        Ok(self.opt_u64_in(name, range)?.unwrap_or(default))
    }

    /// The integer parameter `name`, which must be given, within `range`.
    pub(crate) fn required_u64_in(
        &self,
        name: &str,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ApiError> {
        self.opt_u64_in(name, range)?
            .ok_or_else(|| ApiError::bad_param(name, "is required"))
    }

    /// The integer parameter `name` if given, within `range`.
    pub(crate) fn opt_u64_in(
        &self,
        name: &str,
        range: RangeInclusive<u64>,
    ) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|text| parse_u64_in(name, text, range))
            .transpose()
    }
}

/// `text` as the integer parameter (or header) `name`, within `range`.
pub(crate) fn parse_u64_in(
    name: &str,
    text: &str,
    range: RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    let value: u64 = text.parse().map_err(|_| {
        ApiError::bad_param(name, format!("{text:?} is not a non-negative integer"))
    })?;
    if !range.contains(&value) {
        return Err(ApiError::bad_param(
            name,
            format!(
                "{value} is out of bounds ({}..={})",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(err: ApiError) -> String {
        err.to_string()
    }

    /// The parameters these tests read.
    const KNOWN: [&str; 4] = ["rate", "count", "size", "since"];

    #[test]
    fn absent_parameters_take_their_default() {
        let params = Params::parse(None, &KNOWN).unwrap();
        assert_eq!(params.u64_in("rate", 10, 0..=100).unwrap(), 10);
    }

    #[test]
    fn values_are_parsed_and_bounded() {
        let params = Params::parse(Some("rate=5&count=0"), &KNOWN).unwrap();
        assert_eq!(params.u64_in("rate", 10, 0..=100).unwrap(), 5);
        assert_eq!(params.u64_in("count", 1, 0..=100).unwrap(), 0);
        let err = message(params.u64_in("rate", 10, 0..=4).unwrap_err());
        assert_eq!(err, "invalid parameter `rate`: 5 is out of bounds (0..=4)");
    }

    #[test]
    fn malformed_values_name_the_parameter() {
        for raw in [
            "rate=abc",
            "rate=-1",
            "rate=",
            "rate=1.5",
            "rate=99999999999999999999999",
        ] {
            let params = Params::parse(Some(raw), &KNOWN).unwrap();
            let err = message(params.u64_in("rate", 10, 0..=u64::MAX).unwrap_err());
            assert!(err.starts_with("invalid parameter `rate`:"), "{raw}: {err}");
        }
    }

    #[test]
    fn a_repeated_parameter_is_refused() {
        let err = message(Params::parse(Some("size=1&size=2"), &KNOWN).unwrap_err());
        assert_eq!(err, "invalid parameter `size`: given more than once");
    }

    #[test]
    fn a_parameter_the_endpoint_does_not_take_is_refused_by_name() {
        for (raw, unknown) in [
            ("rat=5", "rat"),
            ("rate=5&tag=x", "tag"),
            ("r%61t=1", "rat"),
        ] {
            let err = Params::parse(Some(raw), &KNOWN).unwrap_err();
            assert_eq!(err.status_code(), 400);
            assert_eq!(message(err), format!("unknown parameter `{unknown}`"));
        }
        let err = message(Params::parse(Some("rate=1"), &[]).unwrap_err());
        assert_eq!(err, "unknown parameter `rate`");
    }

    #[test]
    fn required_parameters_must_be_given() {
        let params = Params::parse(Some("size=1"), &KNOWN).unwrap();
        assert_eq!(params.required_u64_in("size", 0..=9).unwrap(), 1);
        assert_eq!(
            message(params.required_u64_in("count", 0..=9).unwrap_err()),
            "invalid parameter `count`: is required"
        );
        assert_eq!(params.opt_u64_in("since", 0..=9).unwrap(), None);
    }

    #[test]
    fn percent_encoding_is_decoded() {
        let params = Params::parse(Some("r%61te=%37"), &KNOWN).unwrap();
        assert_eq!(params.u64_in("rate", 0, 0..=10).unwrap(), 7);
    }
}

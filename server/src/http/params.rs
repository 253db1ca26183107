//! Query strings of the stream endpoints. Every malformed or out-of-bounds
//! value becomes a `400` naming its parameter, before any stream starts.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use crate::error::ApiError;

/// A parsed query string: each parameter given at most once.
#[derive(Debug, Default)]
pub(crate) struct Params<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Params<'a> {
    /// Parses `raw` (without the `?`). Unknown parameters are kept and
    /// ignored, as HTTP clients expect; a repeated one is an error.
    pub(crate) fn parse(raw: Option<&'a str>) -> Result<Self, ApiError> {
        let mut pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(ApiError::bad_param(&key, "given more than once"));
            }
            pairs.push((key, value));
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The integer parameter `name`, `default` when absent, within `range`.
    pub(crate) fn u64_in(
        &self,
        name: &str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(err: ApiError) -> String {
        err.to_string()
    }

    #[test]
    fn absent_parameters_take_their_default() {
        let params = Params::parse(None).unwrap();
        assert_eq!(params.u64_in("rate", 10, 0..=100).unwrap(), 10);
    }

    #[test]
    fn values_are_parsed_and_bounded() {
        let params = Params::parse(Some("rate=5&count=0&other=x")).unwrap();
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
            let params = Params::parse(Some(raw)).unwrap();
            let err = message(params.u64_in("rate", 10, 0..=u64::MAX).unwrap_err());
            assert!(err.starts_with("invalid parameter `rate`:"), "{raw}: {err}");
        }
    }

    #[test]
    fn a_repeated_parameter_is_refused() {
        let err = message(Params::parse(Some("size=1&size=2")).unwrap_err());
        assert_eq!(err, "invalid parameter `size`: given more than once");
    }

    #[test]
    fn percent_encoding_is_decoded() {
        let params = Params::parse(Some("r%61te=%37")).unwrap();
        assert_eq!(params.u64_in("rate", 0, 0..=10).unwrap(), 7);
    }
}

//! Idempotency keys as clients give them: the rule a key follows (1 to 255
//! visible ASCII characters), read from the `Idempotency-Key` header of a
//! publish or the `idempotency_key` member of a WebSocket publish frame.
//! Pure: what a key does is the publish writer's and the store's
//! (`store::idempotency`).

use serde_json::value::RawValue;

/// Longest key, in characters (as Stripe's API allows).
pub const MAX_LEN: usize = 255;

/// A valid idempotency key: 1 to [`MAX_LEN`] visible ASCII characters
/// (`!` to `~`), compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(Box<str>);

impl Key {
    /// `text` as a key.
    ///
    /// # Errors
    ///
    /// Why it is not one, for the client.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("is empty; a key is 1 to 255 visible ASCII characters".to_owned());
        }
        if text.len() > MAX_LEN {
            return Err(format!(
                "is {} bytes long; a key is at most {MAX_LEN} visible ASCII characters",
                text.len()
            ));
        }
        if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "holds {c:?}; a key is visible ASCII characters (`!` to `~`) only"
            ));
        }
        Ok(Self(text.into()))
    }

    /// The key an `Idempotency-Key` header's value gives. Taken as written,
    /// or, as the IETF draft writes it, as a quoted string (`"k"` is the
    /// key `k`), which then holds neither `"` nor `\`.
    ///
    /// # Errors
    ///
    /// Why it is not a key, for the client.
    pub fn from_header(value: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(value)
            .map_err(|_| "is not ASCII; a key is visible ASCII characters only".to_owned())?;
        match text
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
        {
            Some(quoted) if quoted.contains(['"', '\\']) => Err(
                "is a quoted string with an escape; quote a key without `\"` or `\\`".to_owned(),
            ),
            Some(quoted) => Self::parse(quoted),
            None => Self::parse(text),
        }
    }

    /// The key a frame's `idempotency_key` member gives: a JSON string.
    ///
    /// # Errors
    ///
    /// Why it is not a key, for the client.
    pub fn from_json(value: &RawValue) -> Result<Self, String> {
        let text: String =
            serde_json::from_str(value.get()).map_err(|_| "is not a JSON string".to_owned())?;
        Self::parse(&text)
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        for good in [
            "a",
            "8e03978e-40d5-43e8-bc93-6894a57f9324",
            "!~\"\\",
            &"k".repeat(255),
        ] {
            assert_eq!(Key::parse(good).unwrap().as_str(), good);
        }
        for (bad, says) in [
            ("", "is empty"),
            (&"k".repeat(256), "is 256 bytes long"),
            ("a b", "holds ' '"),
            ("tab\t", "holds '\\t'"),
            ("é", "holds 'é'"),
            ("nul\0", "holds '\\0'"),
        ] {
            let err = Key::parse(bad).unwrap_err();
            assert!(err.starts_with(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_header_gives_its_value_or_the_inside_of_its_quotes() {
        let key = |value: &[u8]| Key::from_header(value).map(|key| key.as_str().to_owned());
        assert_eq!(key(b"abc").unwrap(), "abc");
        assert_eq!(key(b"\"abc\"").unwrap(), "abc");
        assert_eq!(key(b"\"").unwrap(), "\"");
        assert_eq!(key(b"a\"").unwrap(), "a\"");
        assert!(key(b"\"\"").unwrap_err().starts_with("is empty"));
        assert!(key(b"\"a\\\"b\"").unwrap_err().contains("escape"));
        assert!(key(b"\xffab").unwrap_err().contains("not ASCII"));
        assert!(key(b"a b").is_err());
    }

    #[test]
    fn a_frame_gives_a_json_string() {
        let raw = |json: &str| RawValue::from_string(json.to_owned()).unwrap();
        assert_eq!(
            Key::from_json(&raw(r#""o-\u0031""#)).unwrap().as_str(),
            "o-1"
        );
        for bad in ["1", "null", r#"["k"]"#, r#""""#, r#""a b""#] {
            assert!(Key::from_json(&raw(bad)).is_err(), "{bad}");
        }
    }
}

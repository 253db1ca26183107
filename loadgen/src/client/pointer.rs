//! JSON pointers (RFC 6901) followed straight through a message's bytes:
//! every lookup of a message in one pass, the rest of the document skimmed
//! (serde's `IgnoredAny`), nothing allocated and no tree built, so that a
//! foreign target's messages cost about what this project's envelope costs
//! ([`super::envelope`] reads those the same way). A value is read as the
//! lookup says: an integer (a sequence number, digits in a string
//! included), a time in a unit (converted to µs since the Unix epoch), or
//! text whose length is wanted. Pure: no I/O.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::scenario::target::TsUnit;

/// How a lookup reads the value it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A non-negative integer: a JSON number, or a string of digits.
    Integer,
    /// A time in this unit, as µs since the Unix epoch: a number (or a
    /// string holding one), or an RFC 3339 string.
    Time(TsUnit),
    /// A string: its length in bytes.
    TextLength,
}

/// One lookup: where, and how to read what is there.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    /// The pointer's reference tokens.
    pub tokens: &'a [String],
    /// How the value is read.
    pub read: Read,
}

/// The value of each of `lookups` in the JSON document `json`: `None` where
/// the pointer finds nothing, or something its `read` cannot take.
///
/// # Errors
///
/// `json` is not one JSON document.
pub fn find<const N: usize>(
    json: &[u8],
    lookups: &[Lookup<'_>; N],
) -> Result<[Option<u64>; N], serde_json::Error> {
    assert!(N <= 32, "lookups are tracked in a 32-bit mask");
    let mut found = [None; N];
    let mut de = serde_json::Deserializer::from_slice(json);
    Walk {
        lookups,
        depth: 0,
        active: (1u32 << N) - 1,
        found: &mut found,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// A value at `depth` tokens into the document, on the path of the lookups
/// whose bits are set in `active`.
struct Walk<'w, 'a, const N: usize> {
    lookups: &'w [Lookup<'a>; N],
    depth: usize,
    active: u32,
    found: &'w mut [Option<u64>; N],
}

impl<const N: usize> Walk<'_, '_, N> {
    /// The active lookups whose next token is `token`.
    fn matching(&self, token: &str) -> u32 {
        self.each_active()
            .filter(|&i| {
                self.lookups[i]
                    .tokens
                    .get(self.depth)
                    .is_some_and(|t| t == token)
            })
            .fold(0, |mask, i| mask | 1 << i)
    }

    /// The active lookups, by index.
    fn each_active(&self) -> impl Iterator<Item = usize> + '_ {
        (0..N).filter(|&i| self.active & (1 << i) != 0)
    }

    /// Records `read` of each active lookup that ends here.
    fn leaf(self, read: impl Fn(Read) -> Option<u64>) {
        for i in 0..N {
            let lookup = &self.lookups[i];
            if self.active & (1 << i) != 0 && lookup.tokens.len() == self.depth {
                self.found[i] = read(lookup.read);
            }
        }
    }

    /// The walk one level down, for the lookups in `active`.
    fn child(&mut self, active: u32) -> Walk<'_, '_, N> {
        Walk {
            lookups: self.lookups,
            depth: self.depth + 1,
            active,
            found: self.found,
        }
    }
}

impl<'de, const N: usize> DeserializeSeed<'de> for Walk<'_, '_, N> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Walk<'_, '_, N> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(active) = map.next_key_seed(Key(&self))? {
            if active == 0 {
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(self.child(active))?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = itoa::Buffer::new();
        for n in 0usize.. {
            let active = self.matching(index.format(n));
            let more = if active == 0 {
                seq.next_element::<IgnoredAny>()?.is_some()
            } else {
                seq.next_element_seed(self.child(active))?.is_some()
            };
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(|read| match read {
            Read::Integer => Some(v),
            Read::Time(unit) => time_of_integer(v, unit),
            Read::TextLength => None,
        });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => {
                self.leaf(|_| None);
                Ok(())
            }
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(|read| match read {
            Read::Integer => {
                (v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(64)).then_some(v as u64)
            }
            Read::Time(unit) => time_of_number(v, unit),
            Read::TextLength => None,
        });
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(|read| match read {
            Read::Integer => digits(v),
            Read::Time(TsUnit::Rfc3339) => rfc3339_us(v),
            Read::Time(unit) => v.parse::<f64>().ok().and_then(|n| time_of_number(n, unit)),
            Read::TextLength => Some(v.len() as u64),
        });
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf(|_| None);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf(|_| None);
        Ok(())
    }
}

/// An object key: which of the walk's active lookups it continues.
struct Key<'k, 'w, 'a, const N: usize>(&'k Walk<'w, 'a, N>);

impl<'de, const N: usize> DeserializeSeed<'de> for Key<'_, '_, '_, N> {
    type Value = u32;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<u32, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for Key<'_, '_, '_, N> {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<u32, E> {
        Ok(self.0.matching(key))
    }
}

/// `1*DIGIT` as an integer.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// An integer time in `unit`, as µs.
fn time_of_integer(v: u64, unit: TsUnit) -> Option<u64> {
    match unit {
        TsUnit::Ns => Some(v / 1_000),
        TsUnit::Us => Some(v),
        TsUnit::Ms => v.checked_mul(1_000),
        TsUnit::S => v.checked_mul(1_000_000),
        TsUnit::Rfc3339 => None,
    }
}

/// A time in `unit` with a fraction, as µs.
fn time_of_number(v: f64, unit: TsUnit) -> Option<u64> {
    let per_unit = match unit {
        TsUnit::Ns => 1e-3,
        TsUnit::Us => 1.0,
        TsUnit::Ms => 1e3,
        TsUnit::S => 1e6,
        TsUnit::Rfc3339 => return None,
    };
    let us = (v * per_unit).round();
    (us.is_finite() && us >= 0.0 && us < 2f64.powi(64)).then_some(us as u64)
}

/// An RFC 3339 date and time (`2026-12-07T10:15:00.123456Z`,
/// `…+02:00`, `t` and `z` and a space for `T` allowed), as µs since the
/// Unix epoch; `None` before it or if malformed.
pub fn rfc3339_us(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if b.len() < 20
        || separators.iter().any(|&(at, c)| b[at] != c)
        || !matches!(b[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut micros = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if end == 0 {
            return None;
        }
        let digits = &fraction[..end];
        for (i, d) in digits.bytes().take(6).enumerate() {
            micros += i64::from(d - b'0') * 10i64.pow(5 - i as u32);
        }
        rest = &fraction[end..];
    }
    let offset_s = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = number_of(*h1, *h2)?;
            let m = number_of(*m1, *m2)?;
            let offset = h * 3600 + m * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    let us = seconds.checked_mul(1_000_000)?.checked_add(micros)?;
    u64::try_from(us).ok()
}

/// Two ASCII digits as a number.
fn number_of(tens: u8, ones: u8) -> Option<i64> {
    (tens.is_ascii_digit() && ones.is_ascii_digit())
        .then(|| i64::from(tens - b'0') * 10 + i64::from(ones - b'0'))
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(pointer: &str) -> Vec<String> {
        crate::scenario::target::Pointer::parse(pointer)
            .unwrap()
            .tokens
    }

    #[test]
    fn lookups_find_their_values_in_one_pass() {
        let (seq, ts, text) = (
            tokens("/message/seq"),
            tokens("/message/at"),
            tokens("/a~1b/1"),
        );
        let lookups = [
            Lookup {
                tokens: &seq,
                read: Read::Integer,
            },
            Lookup {
                tokens: &ts,
                read: Read::Time(TsUnit::Ms),
            },
            Lookup {
                tokens: &text,
                read: Read::TextLength,
            },
        ];
        let json = br#"{"id":"x1","message":{"pad":[1,{"seq":9}],"seq":42,"at":1700000000123},"a/b":["", "four"]}"#;
        assert_eq!(
            find(json, &lookups).unwrap(),
            [Some(42), Some(1_700_000_000_123_000), Some(4)]
        );
        // Strings of digits are integers; a missing field is None.
        let json = br#"{"message":{"seq":"17"},"a/b":[]}"#;
        assert_eq!(find(json, &lookups).unwrap(), [Some(17), None, None]);
        // A container where a value is wanted, or a value of the wrong kind.
        let json = br#"{"message":{"seq":{"n":1},"at":"soon"}}"#;
        assert_eq!(find(json, &lookups).unwrap(), [None, None, None]);
        let json = br#"{"message":{"seq":-3,"at":true}}"#;
        assert_eq!(find(json, &lookups).unwrap(), [None, None, None]);
        assert!(find(b"not json", &lookups).is_err());
        assert!(find(br#"{"a":1} trailing"#, &lookups).is_err());
    }

    #[test]
    fn times_in_every_unit_are_micros() {
        let at = tokens("/t");
        let read = |json: &str, unit| {
            find(
                json.as_bytes(),
                &[Lookup {
                    tokens: &at,
                    read: Read::Time(unit),
                }],
            )
            .unwrap()[0]
        };
        assert_eq!(
            read(r#"{"t":1700000000123456789}"#, TsUnit::Ns),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(
            read(r#"{"t":1700000000123456}"#, TsUnit::Us),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(
            read(r#"{"t":1700000000.5}"#, TsUnit::S),
            Some(1_700_000_000_500_000)
        );
        assert_eq!(
            read(r#"{"t":"1700000000123"}"#, TsUnit::Ms),
            Some(1_700_000_000_123_000)
        );
        assert_eq!(
            read(r#"{"t":"2023-11-14T22:13:20.123456Z"}"#, TsUnit::Rfc3339),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(read(r#"{"t":1700000000}"#, TsUnit::Rfc3339), None);
    }

    #[test]
    fn rfc3339_reads_offsets_fractions_and_refuses_the_malformed() {
        assert_eq!(rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_us("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(
            rfc3339_us("2023-11-15T00:13:20.5+02:00"),
            Some(1_700_000_000_500_000)
        );
        assert_eq!(
            rfc3339_us("2023-11-14t20:13:20.000001123-02:00"),
            Some(1_700_000_000_000_001)
        );
        assert_eq!(
            rfc3339_us("2000-02-29 12:00:00z"),
            Some(951_825_600_000_000)
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0200",
            "1969-12-31T23:59:59Z",
            "２０２３-11-14T22:13:20Z",
        ] {
            assert_eq!(rfc3339_us(bad), None, "{bad}");
        }
    }
}

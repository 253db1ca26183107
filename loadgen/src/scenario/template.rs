//! Templates of a `[target]`: URLs, headers, request bodies and the frames
//! and bodies the load generator publishes, with the per-client and
//! per-publish values put in when each is sent.
//!
//! - In URLs (`subscribe_url`, `publish_url`), `{topic}` and `{client}`;
//!   in `subscribe_url`, `{token}` too: the client's token (its minted JWT
//!   with `--jwt-key`, else `--token`).
//! - In headers, bodies and frames, `{{topic}}`, `{{client}}` (and in a
//!   subscriber's headers and frames, `{{token}}`) and, in what
//!   the load generator publishes, `{{seq}}` (its own sequence number, from
//!   1), `{{ts_us}}` (the publish's intended send time, µs since the Unix
//!   epoch) and `{{pad}}` (`size` bytes of filler). Single braces are
//!   literal there: JSON is full of them.
//! - Anywhere, `${NAME}`: the environment variable `NAME` (an API key is
//!   given so, never written in the file). It must be set when the scenario
//!   is loaded.
//!
//! A template is parsed once; expanding it is a walk over its parts.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A value put into a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// The topic.
    Topic,
    /// The client's number (or `publisher` in what is published).
    Client,
    /// The load generator's sequence number of a publish, from 1.
    Seq,
    /// A publish's intended send time, µs since the Unix epoch.
    TsUs,
    /// Filler of the scenario's `size`.
    Pad,
    /// The client's token: its minted JWT, or the static `--token`.
    Token,
}

impl Slot {
    /// Its name in templates.
    pub fn name(self) -> &'static str {
        match self {
            Slot::Topic => "topic",
            Slot::Client => "client",
            Slot::Seq => "seq",
            Slot::TsUs => "ts_us",
            Slot::Pad => "pad",
            Slot::Token => "token",
        }
    }

    /// Every slot.
    const ALL: [Slot; 6] = [
        Slot::Topic,
        Slot::Client,
        Slot::Seq,
        Slot::TsUs,
        Slot::Pad,
        Slot::Token,
    ];
}

/// How placeholders are written in a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `{name}` (URLs).
    Url,
    /// `{{name}}` (headers, bodies, frames).
    Text,
}

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Part {
    /// Written as is.
    Literal(String),
    /// A value given at expansion.
    Slot(Slot),
    /// An environment variable, read at expansion.
    Env(String),
}

/// A parsed template; its serde form keeps the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// The template as written.
    source: String,
    parts: Vec<Part>,
}

/// The values a template is expanded with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Values<'a> {
    /// `topic`.
    pub topic: &'a str,
    /// `client`.
    pub client: &'a str,
    /// `seq`.
    pub seq: u64,
    /// `ts_us`.
    pub ts_us: u64,
    /// `pad`.
    pub pad: &'a str,
    /// `token`.
    pub token: &'a str,
}

impl Template {
    /// Parses `source` written in `syntax`, taking only the `allowed`
    /// slots.
    ///
    /// # Errors
    ///
    /// An unknown or unallowed placeholder, an unclosed one, or an
    /// environment variable that is not set, in words naming it.
    pub fn parse(source: &str, syntax: Syntax, allowed: &[Slot]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(c) = rest.chars().next() {
            let placeholder = match syntax {
                Syntax::Url => rest.strip_prefix('{').map(|r| (r, "}")),
                Syntax::Text => rest.strip_prefix("{{").map(|r| (r, "}}")),
            };
            let part = if let Some(inner) = rest.strip_prefix("${") {
                let end = inner
                    .find('}')
                    .ok_or_else(|| format!("`${{` without its `}}` in {source:?}"))?;
                let name = &inner[..end];
                rest = &inner[end + 1..];
                Part::Env(env_name(name)?)
            } else if let Some((inner, close)) = placeholder {
                let end = inner
                    .find(close)
                    .ok_or_else(|| format!("a placeholder without its `{close}` in {source:?}"))?;
                let name = &inner[..end];
                rest = &inner[end + close.len()..];
                Part::Slot(slot(name, syntax, allowed)?)
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
                continue;
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it uses `slot`.
    pub fn uses(&self, slot: Slot) -> bool {
        self.parts.contains(&Part::Slot(slot))
    }

    /// Whether it reads an environment variable.
    pub fn reads_env(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Env(_)))
    }

    /// Appends the template with `values` (and the environment) to `out`.
    pub fn expand_into(&self, values: &Values<'_>, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Env(name) => out.push_str(&std::env::var(name).unwrap_or_default()),
                Part::Slot(Slot::Topic) => out.push_str(values.topic),
                Part::Slot(Slot::Client) => out.push_str(values.client),
                Part::Slot(Slot::Pad) => out.push_str(values.pad),
                Part::Slot(Slot::Token) => out.push_str(values.token),
                Part::Slot(Slot::Seq) => {
                    let _ = write!(out, "{}", values.seq);
                }
                Part::Slot(Slot::TsUs) => {
                    let _ = write!(out, "{}", values.ts_us);
                }
            }
        }
    }

    /// The template with `values`.
    pub fn expand(&self, values: &Values<'_>) -> String {
        let mut out = String::with_capacity(self.source.len() + values.pad.len());
        self.expand_into(values, &mut out);
        out
    }
}

/// `name` as an environment variable that is set.
fn env_name(name: &str) -> Result<String, String> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("`${{{name}}}` is not an environment variable name"));
    }
    if std::env::var_os(name).is_none() {
        return Err(format!("the environment variable {name} is not set"));
    }
    Ok(name.to_owned())
}

/// The slot `name` names, if `allowed`.
fn slot(name: &str, syntax: Syntax, allowed: &[Slot]) -> Result<Slot, String> {
    let written = |slot: Slot| match syntax {
        Syntax::Url => format!("{{{}}}", slot.name()),
        Syntax::Text => format!("{{{{{}}}}}", slot.name()),
    };
    let list = || {
        allowed
            .iter()
            .map(|&s| written(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match Slot::ALL.into_iter().find(|s| s.name() == name) {
        Some(slot) if allowed.contains(&slot) => Ok(slot),
        _ if allowed.is_empty() => {
            Err(format!("no placeholder is allowed here (found {:?})", name))
        }
        _ => Err(format!(
            "unknown placeholder {:?}: here it may be {}",
            name,
            list()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHED: &[Slot] = &[Slot::Topic, Slot::Client, Slot::Seq, Slot::TsUs, Slot::Pad];

    #[test]
    fn urls_take_single_braces_and_text_double_ones() {
        let url = Template::parse(
            "http://h:1/topics/{topic}/sse?c={client}",
            Syntax::Url,
            &[Slot::Topic, Slot::Client],
        )
        .unwrap();
        let values = Values {
            topic: "t-1",
            client: "7",
            ..Values::default()
        };
        assert_eq!(url.expand(&values), "http://h:1/topics/t-1/sse?c=7");
        let body = Template::parse(
            r#"{"seq":{{seq}},"at":{{ts_us}},"room":"{{topic}}","p":"{{pad}}","n":{"a":1}}"#,
            Syntax::Text,
            PUBLISHED,
        )
        .unwrap();
        let values = Values {
            topic: "r",
            seq: 3,
            ts_us: 99,
            pad: "xx",
            ..Values::default()
        };
        assert_eq!(
            body.expand(&values),
            r#"{"seq":3,"at":99,"room":"r","p":"xx","n":{"a":1}}"#
        );
        assert!(body.uses(Slot::Seq) && !body.uses(Slot::Client));
    }

    #[test]
    fn a_subscriber_may_carry_its_token_in_a_url_or_header() {
        let subscribing = [Slot::Topic, Slot::Client, Slot::Token];
        let url = Template::parse(
            "/sse/{topic}?access_token={token}",
            Syntax::Url,
            &subscribing,
        )
        .unwrap();
        let header = Template::parse("Bearer {{token}}", Syntax::Text, &subscribing).unwrap();
        let values = Values {
            topic: "t",
            token: "eyJ.x.y",
            ..Values::default()
        };
        assert_eq!(url.expand(&values), "/sse/t?access_token=eyJ.x.y");
        assert_eq!(header.expand(&values), "Bearer eyJ.x.y");
        assert!(url.uses(Slot::Token) && header.uses(Slot::Token));
        let err = Template::parse("{{token}}", Syntax::Text, PUBLISHED).unwrap_err();
        assert!(err.contains("unknown placeholder \"token\""), "{err}");
    }

    #[test]
    fn environment_variables_are_read_when_expanded() {
        // PATH is set wherever the tests run.
        let header = Template::parse("Bearer ${PATH}", Syntax::Text, &[]).unwrap();
        assert!(header.reads_env());
        assert_eq!(
            header.expand(&Values::default()),
            format!("Bearer {}", std::env::var("PATH").unwrap())
        );
        let err = Template::parse("${STREAMGAUGE_SURELY_UNSET_21}", Syntax::Text, &[]).unwrap_err();
        assert!(
            err.contains("STREAMGAUGE_SURELY_UNSET_21 is not set"),
            "{err}"
        );
        assert!(Template::parse("${1x}", Syntax::Text, &[]).is_err());
        assert!(Template::parse("${open", Syntax::Text, &[]).is_err());
    }

    #[test]
    fn placeholders_that_do_not_belong_are_named() {
        let err = Template::parse("/x/{seq}", Syntax::Url, &[Slot::Topic]).unwrap_err();
        assert!(err.contains("\"seq\"") && err.contains("{topic}"), "{err}");
        let err = Template::parse("{{sequence}}", Syntax::Text, PUBLISHED).unwrap_err();
        assert!(err.contains("unknown placeholder \"sequence\""), "{err}");
        assert!(Template::parse("{{seq", Syntax::Text, PUBLISHED).is_err());
        let err = Template::parse("a{{topic}}", Syntax::Text, &[]).unwrap_err();
        assert!(err.contains("no placeholder is allowed here"), "{err}");
        // A single brace in text is literal, and so is a closing pair.
        let json = Template::parse(r#"{"a":{"b":1}}"#, Syntax::Text, &[]).unwrap();
        assert_eq!(json.expand(&Values::default()), r#"{"a":{"b":1}}"#);
    }
}

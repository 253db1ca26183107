//! A foreign target: any SSE or WebSocket server, described as data (a
//! scenario file's `[target]` table, or the `--target-*` flags, with the
//! same names). [`RawTarget`] holds what was written; [`RawTarget::validate`]
//! checks it once into a [`TargetSpec`] that cannot hold an invalid value:
//! where to subscribe and how (headers, WebSocket subprotocols and opening
//! frames, a POST body), how to read each message (the `format`, JSON
//! pointers to a sequence number and a time), when a stream ends, how the
//! load generator publishes, and how TLS verifies the server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::StreamKind;
use super::template::{Slot, Syntax, Template, Values};

/// How each message of the stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// This project's protocol (docs/protocol.md): `seq`, `ts`, `pts`, gap
    /// notices.
    Streamgauge,
    /// A JSON message; `seq_pointer` and `ts_pointer` find its sequence
    /// number and time.
    Json,
    /// Any text: messages are counted, nothing is read from them.
    Text,
    /// OpenAI-style chat completion chunks, `data: [DONE]` at the end.
    Openai,
}

impl Format {
    /// Its name in files, flags and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Streamgauge => "streamgauge",
            Format::Json => "json",
            Format::Text => "text",
            Format::Openai => "openai",
        }
    }
}

/// The unit of the time `ts_pointer` finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TsUnit {
    /// Nanoseconds since the Unix epoch.
    Ns,
    /// Microseconds since the Unix epoch (what `{{ts_us}}` writes).
    #[default]
    Us,
    /// Milliseconds since the Unix epoch.
    Ms,
    /// Seconds since the Unix epoch (a fraction allowed).
    S,
    /// An RFC 3339 date and time (`2026-12-07T10:15:00.123456Z`).
    Rfc3339,
}

/// How the server's certificate is verified (`https://`, `wss://`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Against the machine's trust store.
    System,
    /// Against the certificates of this PEM file only (`ca_cert`).
    CaCert(PathBuf),
    /// Not at all (`insecure`): the report says so.
    Insecure,
}

impl Trust {
    /// How servers are verified, in words for messages and reports.
    pub fn describe(&self) -> String {
        match self {
            Trust::System => "verified against the system's trust store".to_owned(),
            Trust::CaCert(path) => format!("verified against ca_cert {}", path.display()),
            Trust::Insecure => "NOT verified: insecure".to_owned(),
        }
    }
}

/// A JSON pointer (RFC 6901): its text and its reference tokens, unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// As written (`/message/seq`).
    pub source: String,
    /// Each reference token (`["message", "seq"]`).
    pub tokens: Vec<String>,
}

impl Pointer {
    /// Parses `source`.
    ///
    /// # Errors
    ///
    /// It does not start with `/`, or has a `~` not followed by 0 or 1.
    pub fn parse(source: &str) -> Result<Self, String> {
        let Some(rest) = source.strip_prefix('/') else {
            return Err(format!(
                "{source:?} is not a JSON pointer: it starts with `/` (`/{source}`?)"
            ));
        };
        let tokens = rest
            .split('/')
            .map(|token| {
                let bad = token
                    .match_indices('~')
                    .any(|(at, _)| !matches!(token.as_bytes().get(at + 1), Some(b'0' | b'1')));
                if bad {
                    return Err(format!(
                        "{source:?}: `~` must be `~0` or `~1` in a JSON pointer"
                    ));
                }
                Ok(token.replace("~1", "/").replace("~0", "~"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            source: source.to_owned(),
            tokens,
        })
    }
}

/// How the load generator publishes to a foreign target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Publish {
    /// An HTTP request per publish.
    Http {
        /// `publish_url`: absolute, or a path on the target's server.
        url: Template,
        /// `publish_method`.
        method: String,
        /// `publish_headers`.
        headers: Vec<(String, Template)>,
        /// `publish_body`.
        body: Template,
    },
    /// A text frame per publish on a WebSocket of the load generator's own
    /// (`ws_publish_frame`), opened to `url` (`publish_url`, or else
    /// `subscribe_url`) as a subscriber's is: headers, subprotocols and
    /// opening frames.
    WebSocket {
        /// Where the publishing WebSocket connects.
        url: Template,
        /// The frame.
        frame: Template,
    },
}

/// Whether a URL names its server or is a path on the `--url` or local one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `http://`, `https://`, `ws://` or `wss://` with a host.
    Absolute,
    /// A path (`/v1/chat/completions`) on the server at `--url`, or on the
    /// local server started for the run.
    Relative,
}

/// A validated foreign target (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// `subscribe_url`.
    pub subscribe_url: Template,
    /// Whether `subscribe_url` names its server.
    pub origin: Origin,
    /// The transport: from the URL's scheme, or the scenario's for a path.
    pub websocket: bool,
    /// Over TLS (`https://`, `wss://`).
    pub tls: bool,
    /// `headers`, in order, their values templates.
    pub headers: Vec<(String, Template)>,
    /// `ws_subprotocols`.
    pub ws_subprotocols: Vec<String>,
    /// `ws_on_open`.
    pub ws_on_open: Vec<Template>,
    /// `format`.
    pub format: Format,
    /// `seq_pointer`.
    pub seq_pointer: Option<Pointer>,
    /// `ts_pointer`.
    pub ts_pointer: Option<Pointer>,
    /// `ts_unit`.
    pub ts_unit: TsUnit,
    /// `event_filter`: SSE event names counted (empty: all).
    pub event_filter: Vec<String>,
    /// `end_marker`: a message that ends the stream (`[DONE]` for
    /// `openai`).
    pub end_marker: Option<String>,
    /// `request_method`.
    pub request_method: String,
    /// `request_body`.
    pub request_body: Option<Template>,
    /// How the load generator publishes, if it does.
    pub publish: Option<Publish>,
    /// `topic`; `None`: one unique to the run.
    pub topic: Option<String>,
    /// How TLS verifies the server (`None` over plain TCP).
    pub trust: Option<Trust>,
}

impl TargetSpec {
    /// What the scenario streams, as far as the rest of the load generator
    /// cares: a token stream (`openai`), a topic it publishes to, or a
    /// stream the server pushes on its own.
    pub fn stream_kind(&self) -> StreamKind {
        match (self.format, &self.publish) {
            (Format::Openai, _) => StreamKind::Tokens,
            (_, Some(_)) => StreamKind::Topic,
            (_, None) => StreamKind::Ticker,
        }
    }

    /// Whether gaps and duplicates can be checked: the messages carry a
    /// sequence number the load generator can find.
    pub fn checks_seq(&self) -> bool {
        self.format == Format::Streamgauge || self.seq_pointer.is_some()
    }

    /// Whether a stream ends by itself (then the client asks again).
    pub fn is_finite(&self) -> bool {
        self.end_marker.is_some()
    }

    /// Whether the subscribing request carries the client's token where
    /// it says (`{token}`, `{{token}}`).
    pub fn uses_token(&self) -> bool {
        let uses = |t: &Template| t.uses(Slot::Token);
        uses(&self.subscribe_url)
            || self.headers.iter().any(|(_, value)| uses(value))
            || self.ws_on_open.iter().any(uses)
            || self.request_body.as_ref().is_some_and(uses)
    }
}

/// A setting of a `[target]` that can be wrong, by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[target] {key}: {message}")]
pub struct Invalid {
    /// The key at fault (`seq_pointer`).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// A `[target]` as written: every key optional, nothing checked yet. A
/// file's table and the `--target-*` flags fill the same struct; the flags
/// then replace the file's keys they give ([`RawTarget::merge`]). Its
/// serde form is what a report's manifest records: the keys given, a
/// secret header's literal value left out (`${NAME}` references are kept:
/// they hold no secret).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// See [`TargetSpec::subscribe_url`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe_url: Option<String>,
    /// Request headers.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "redacted")]
    pub headers: Option<BTreeMap<String, String>>,
    /// WebSocket subprotocols offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_subprotocols: Option<Vec<String>>,
    /// Frames sent once the WebSocket is open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_on_open: Option<Vec<String>>,
    /// How messages are read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Where the sequence number is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_pointer: Option<String>,
    /// Where the time is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_pointer: Option<String>,
    /// The time's unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_unit: Option<TsUnit>,
    /// SSE event names counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_filter: Option<Vec<String>>,
    /// The message that ends a stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_marker: Option<String>,
    /// The subscribing request's method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_method: Option<String>,
    /// The subscribing request's body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// Where publishes go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_url: Option<String>,
    /// The publishes' method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_method: Option<String>,
    /// The publishes' headers.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "redacted")]
    pub publish_headers: Option<BTreeMap<String, String>>,
    /// The publishes' body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_body: Option<String>,
    /// A WebSocket frame per publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_publish_frame: Option<String>,
    /// The topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// A PEM file of the CA(s) to trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Skip certificate verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

/// Whether a header named `name` may carry a secret (credentials, keys,
/// tokens, cookies).
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "key",
        "token",
        "secret",
        "password",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// Headers as a manifest records them: a secret header's value that is not
/// an environment reference is `<redacted>`.
fn redacted<S: serde::Serializer>(
    headers: &Option<BTreeMap<String, String>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let shown: Option<BTreeMap<&str, &str>> = headers.as_ref().map(|headers| {
        headers
            .iter()
            .map(|(name, value)| {
                let hidden = is_secret(name) && !value.contains("${");
                (
                    name.as_str(),
                    if hidden { "<redacted>" } else { value.as_str() },
                )
            })
            .collect()
    });
    shown.serialize(serializer)
}

/// What publishes carry by default over HTTP: the load generator's own
/// sequence number and intended send time, and the filler, as JSON.
pub const DEFAULT_PUBLISH_BODY: &str = r#"{"seq":{{seq}},"ts_us":{{ts_us}},"pad":"{{pad}}"}"#;

/// The slots of what is published.
const PUBLISHED: &[Slot] = &[Slot::Topic, Slot::Client, Slot::Seq, Slot::TsUs, Slot::Pad];

/// The slots of what a subscribing client sends.
const SUBSCRIBING: &[Slot] = &[Slot::Topic, Slot::Client, Slot::Token];

impl RawTarget {
    /// This table with every key `over` gives replaced by `over`'s.
    pub fn merge(self, over: RawTarget) -> RawTarget {
        macro_rules! pick {
            ($($field:ident),*) => {
                RawTarget { $($field: over.$field.or(self.$field)),* }
            };
        }
        pick!(
            subscribe_url,
            headers,
            ws_subprotocols,
            ws_on_open,
            format,
            seq_pointer,
            ts_pointer,
            ts_unit,
            event_filter,
            end_marker,
            request_method,
            request_body,
            publish_url,
            publish_method,
            publish_headers,
            publish_body,
            ws_publish_frame,
            topic,
            ca_cert,
            insecure
        )
    }

    /// Whether it says anything at all.
    pub fn is_empty(&self) -> bool {
        *self == RawTarget::default()
    }

    /// Checks every key into a [`TargetSpec`]; `websocket` is the
    /// scenario's transport, for a `subscribe_url` that is a path.
    ///
    /// # Errors
    ///
    /// The first key that is wrong, and why.
    pub fn validate(&self, websocket: bool) -> Result<TargetSpec, Invalid> {
        let fail = |key: &'static str, message: String| Invalid { key, message };
        let url = self.subscribe_url.as_deref().ok_or_else(|| {
            fail(
                "subscribe_url",
                "a target needs a subscribe_url (http://, https://, ws://, wss:// or a /path)"
                    .to_owned(),
            )
        })?;
        let subscribe_url = url_template(url, SUBSCRIBING).map_err(|m| fail("subscribe_url", m))?;
        let (origin, websocket, tls) = match scheme_of(url) {
            Some(scheme) => (Origin::Absolute, scheme.websocket, scheme.tls),
            None => (Origin::Relative, websocket, false),
        };
        let format = self.format.unwrap_or(Format::Streamgauge);
        let spec = TargetSpec {
            subscribe_url,
            origin,
            websocket,
            tls,
            headers: headers(self.headers.as_ref(), SUBSCRIBING).map_err(|m| fail("headers", m))?,
            ws_subprotocols: self.ws_subprotocols.clone().unwrap_or_default(),
            ws_on_open: (self.ws_on_open.iter().flatten())
                .map(|frame| Template::parse(frame, Syntax::Text, SUBSCRIBING))
                .collect::<Result<_, _>>()
                .map_err(|m| fail("ws_on_open", m))?,
            format,
            seq_pointer: pointer(self.seq_pointer.as_deref())
                .map_err(|m| fail("seq_pointer", m))?,
            ts_pointer: pointer(self.ts_pointer.as_deref()).map_err(|m| fail("ts_pointer", m))?,
            ts_unit: self.ts_unit.unwrap_or_default(),
            event_filter: self.event_filter.clone().unwrap_or_default(),
            end_marker: self
                .end_marker
                .clone()
                .or_else(|| (format == Format::Openai).then(|| "[DONE]".to_owned())),
            request_method: method(self.request_method.as_deref(), format)
                .map_err(|m| fail("request_method", m))?,
            request_body: (self.request_body.as_deref())
                .map(|body| Template::parse(body, Syntax::Text, SUBSCRIBING))
                .transpose()
                .map_err(|m| fail("request_body", m))?,
            publish: self.publish(websocket)?,
            topic: self.topic.clone(),
            trust: trust(self.ca_cert.as_ref(), self.insecure.unwrap_or(false), tls)
                .map_err(|(key, m)| fail(key, m))?,
        };
        check(&spec, self)?;
        Ok(spec)
    }

    /// How the load generator publishes, if the table says so.
    fn publish(&self, websocket: bool) -> Result<Option<Publish>, Invalid> {
        let fail = |key: &'static str, message: String| Invalid { key, message };
        let text = |key: &'static str, text: &str, slots: &[Slot]| {
            Template::parse(text, Syntax::Text, slots).map_err(|m| fail(key, m))
        };
        let url = (self.publish_url.as_deref())
            .map(|url| url_template(url, &[Slot::Topic]).map_err(|m| fail("publish_url", m)))
            .transpose()?;
        if let Some(frame) = &self.ws_publish_frame {
            if self.publish_body.is_some() || self.publish_method.is_some() {
                return Err(fail(
                    "ws_publish_frame",
                    "publishes are either HTTP requests (publish_body, publish_method) or \
                     WebSocket frames, not both"
                        .to_owned(),
                ));
            }
            let url = match url {
                Some(url) => url,
                None if websocket => {
                    let subscribe = self.subscribe_url.as_deref().unwrap_or_default();
                    url_template(subscribe, SUBSCRIBING).map_err(|m| fail("subscribe_url", m))?
                }
                None => {
                    return Err(fail(
                        "ws_publish_frame",
                        "WebSocket publishes need a ws:// or wss:// publish_url (the \
                         subscribe_url is not a WebSocket)"
                            .to_owned(),
                    ));
                }
            };
            if scheme_of(url.source()).is_some_and(|s| !s.websocket) {
                return Err(fail(
                    "publish_url",
                    "a ws_publish_frame goes over a WebSocket: ws:// or wss://".to_owned(),
                ));
            }
            let frame = text("ws_publish_frame", frame, PUBLISHED)?;
            return Ok(Some(Publish::WebSocket { url, frame }));
        }
        let Some(url) = url else {
            for (key, set) in [
                ("publish_body", self.publish_body.is_some()),
                ("publish_method", self.publish_method.is_some()),
                ("publish_headers", self.publish_headers.is_some()),
            ] {
                if set {
                    return Err(fail(key, "needs a publish_url".to_owned()));
                }
            }
            return Ok(None);
        };
        if scheme_of(url.source()).is_some_and(|s| s.websocket) {
            return Err(fail(
                "publish_url",
                "a ws:// publish_url takes a ws_publish_frame, not an HTTP body".to_owned(),
            ));
        }
        Ok(Some(Publish::Http {
            url,
            method: token(self.publish_method.as_deref().unwrap_or("POST"))
                .map_err(|m| fail("publish_method", m))?,
            headers: headers(self.publish_headers.as_ref(), &[])
                .map_err(|m| fail("publish_headers", m))?,
            body: text(
                "publish_body",
                self.publish_body.as_deref().unwrap_or(DEFAULT_PUBLISH_BODY),
                PUBLISHED,
            )?,
        }))
    }
}

/// What the rest of a table must agree on once each key is valid alone.
fn check(spec: &TargetSpec, raw: &RawTarget) -> Result<(), Invalid> {
    let fail = |key: &'static str, message: &str| {
        Err(Invalid {
            key,
            message: message.to_owned(),
        })
    };
    if spec.seq_pointer.is_some() && spec.format != Format::Json {
        return fail(
            "seq_pointer",
            "pointers read JSON messages: format = \"json\"",
        );
    }
    if spec.ts_pointer.is_some() && !matches!(spec.format, Format::Json | Format::Openai) {
        return fail(
            "ts_pointer",
            "pointers read JSON messages: format = \"json\" (or an openai chunk's time)",
        );
    }
    if raw.ts_unit.is_some() && spec.ts_pointer.is_none() {
        return fail(
            "ts_unit",
            "is the unit of what ts_pointer finds: set ts_pointer",
        );
    }
    if !spec.websocket {
        if !spec.ws_subprotocols.is_empty() {
            return fail(
                "ws_subprotocols",
                "is for a WebSocket target (ws://, wss://)",
            );
        }
        if !spec.ws_on_open.is_empty() {
            return fail("ws_on_open", "is for a WebSocket target (ws://, wss://)");
        }
    } else {
        if !spec.event_filter.is_empty() {
            return fail(
                "event_filter",
                "names SSE events: for an http:// or https:// target",
            );
        }
        if spec.request_method != "GET" || spec.request_body.is_some() {
            return fail(
                "request_method",
                "a WebSocket opens with GET and no body (send frames with ws_on_open)",
            );
        }
        if spec.format == Format::Openai {
            return fail(
                "format",
                "openai streams are SSE answers to a POST: an http(s) target",
            );
        }
    }
    if spec.format == Format::Openai && spec.request_body.is_none() {
        return fail(
            "request_body",
            "an openai target needs the chat request to send, with \"stream\": true",
        );
    }
    if let Some(body) = spec
        .request_body
        .as_ref()
        .filter(|_| spec.format == Format::Openai)
    {
        let values = Values {
            topic: "t",
            client: "0",
            ..Values::default()
        };
        let json: Result<serde_json::Value, _> = serde_json::from_str(&body.expand(&values));
        match json {
            Ok(json) if json.get("stream") == Some(&serde_json::Value::Bool(true)) => {}
            Ok(_) => return fail("request_body", "must ask for a stream: \"stream\": true"),
            Err(e) => return fail("request_body", &format!("is not JSON: {e}")),
        }
    }
    if let Some(topic) = &spec.topic
        && (topic.is_empty() || topic.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return fail("topic", "must be a non-empty name without spaces");
    }
    if matches!(spec.publish, Some(Publish::Http { .. }))
        && spec.origin == Origin::Relative
        && scheme_of(publish_source(spec)).is_some()
    {
        return fail(
            "publish_url",
            "an absolute publish_url needs an absolute subscribe_url (one server)",
        );
    }
    Ok(())
}

/// The publish URL's text.
fn publish_source(spec: &TargetSpec) -> &str {
    match &spec.publish {
        Some(Publish::Http { url, .. } | Publish::WebSocket { url, .. }) => url.source(),
        None => "",
    }
}

/// What a URL's scheme says.
#[derive(Debug, Clone, Copy)]
struct Scheme {
    websocket: bool,
    tls: bool,
}

/// The scheme of an absolute `url`; `None` for a path.
fn scheme_of(url: &str) -> Option<Scheme> {
    let (scheme, _) = url.split_once("://")?;
    let (websocket, tls) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (false, false),
        "https" => (false, true),
        "ws" => (true, false),
        "wss" => (true, true),
        _ => return None,
    };
    Some(Scheme { websocket, tls })
}

/// `url` as a URL template: absolute with a known scheme, its placeholders
/// only in the path and query (one server for every client), or a path.
fn url_template(url: &str, slots: &[Slot]) -> Result<Template, String> {
    let template = Template::parse(url, Syntax::Url, slots)?;
    if url.starts_with('/') {
        return Ok(template);
    }
    if scheme_of(url).is_none() {
        return Err(format!(
            "{url:?} is neither an http://, https://, ws:// or wss:// URL nor a /path"
        ));
    }
    let origin = |topic: &str, client: &str| {
        let values = Values {
            topic,
            client,
            token: topic,
            ..Values::default()
        };
        url::Url::parse(&template.expand(&values))
            .map_err(|e| format!("{url:?} is not a URL: {e}"))
            .map(|u| (u.host_str().map(str::to_owned), u.port_or_known_default()))
    };
    let (one, other) = (origin("a", "0")?, origin("b", "1")?);
    if one.0.is_none() {
        return Err(format!("{url:?} has no host"));
    }
    if one != other {
        return Err(format!(
            "{url:?}: {{topic}} and {{client}} may only be in the path and query (one server)"
        ));
    }
    Ok(template)
}

/// Header templates, their names checked.
fn headers(
    headers: Option<&BTreeMap<String, String>>,
    slots: &[Slot],
) -> Result<Vec<(String, Template)>, String> {
    (headers.into_iter().flatten())
        .map(|(name, value)| {
            let name = token(name).map_err(|m| format!("header name: {m}"))?;
            if value.contains(['\r', '\n']) {
                return Err(format!("header {name}: a value is one line"));
            }
            Ok((name, Template::parse(value, Syntax::Text, slots)?))
        })
        .collect()
}

/// An HTTP token (a method, a header name), as written.
fn token(text: &str) -> Result<String, String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if text.is_empty() || !text.chars().all(tchar) {
        return Err(format!("{text:?} is not an HTTP token"));
    }
    Ok(text.to_owned())
}

/// The subscribing request's method: given, or POST for `openai`, GET
/// otherwise.
fn method(given: Option<&str>, format: Format) -> Result<String, String> {
    match given {
        Some(method) => token(&method.to_ascii_uppercase()),
        None if format == Format::Openai => Ok("POST".to_owned()),
        None => Ok("GET".to_owned()),
    }
}

/// An optional pointer, parsed.
fn pointer(text: Option<&str>) -> Result<Option<Pointer>, String> {
    text.map(Pointer::parse).transpose()
}

/// How TLS verifies the server; `tls` says whether the target uses TLS.
fn trust(
    ca_cert: Option<&PathBuf>,
    insecure: bool,
    tls: bool,
) -> Result<Option<Trust>, (&'static str, String)> {
    match (ca_cert, insecure) {
        (Some(_), true) => Err((
            "insecure",
            "verifies nothing, and ca_cert says what to verify with: one or the other".to_owned(),
        )),
        (Some(_), false) if !tls => Err((
            "ca_cert",
            "is for TLS: an https:// or wss:// subscribe_url".to_owned(),
        )),
        (None, true) if !tls => Err((
            "insecure",
            "is for TLS: an https:// or wss:// subscribe_url".to_owned(),
        )),
        _ if !tls => Ok(None),
        (Some(path), false) => Ok(Some(Trust::CaCert(path.clone()))),
        (None, true) => Ok(Some(Trust::Insecure)),
        (None, false) => Ok(Some(Trust::System)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawTarget {
        toml::from_str(toml_text).unwrap()
    }

    fn invalid(toml_text: &str) -> Invalid {
        raw(toml_text).validate(false).unwrap_err()
    }

    #[test]
    fn pointers_unescape_their_tokens() {
        let p = Pointer::parse("/a~1b/m~0n/0").unwrap();
        assert_eq!(p.tokens, ["a/b", "m~n", "0"]);
        assert_eq!(Pointer::parse("/").unwrap().tokens, [""]);
        assert!(
            Pointer::parse("seq")
                .unwrap_err()
                .contains("starts with `/`")
        );
        assert!(Pointer::parse("/a~2").is_err());
    }

    #[test]
    fn a_hub_with_publishes_is_a_topic_and_an_llm_a_token_stream() {
        let hub = raw(r#"
subscribe_url = "https://hub.example:8443/topics/{topic}?c={client}"
format = "json"
seq_pointer = "/message/seq"
ts_pointer = "/message/ts_us"
publish_url = "https://hub.example:8443/topics/{topic}"
headers = { Authorization = "Bearer ${PATH}" }
"#)
        .validate(false)
        .unwrap();
        assert_eq!(hub.stream_kind(), StreamKind::Topic);
        assert!(hub.tls && !hub.websocket && hub.checks_seq());
        assert_eq!(hub.trust, Some(Trust::System));
        assert!(matches!(&hub.publish, Some(Publish::Http { method, .. }) if method == "POST"));
        let llm = raw(r#"
subscribe_url = "http://127.0.0.1:8000/v1/chat/completions"
format = "openai"
request_body = '{"model": "m", "stream": true, "messages": []}'
"#)
        .validate(false)
        .unwrap();
        assert_eq!(llm.stream_kind(), StreamKind::Tokens);
        assert_eq!(
            (llm.request_method.as_str(), llm.end_marker.as_deref()),
            ("POST", Some("[DONE]"))
        );
        assert!(!llm.checks_seq() && llm.is_finite());
        let chat = raw(r#"
subscribe_url = "wss://chat.example/ws"
ws_subprotocols = ["chat.v1"]
ws_on_open = ['{"join":"{{topic}}"}']
ws_publish_frame = '{"say":{"seq":{{seq}},"at":{{ts_us}}}}'
insecure = true
"#)
        .validate(false)
        .unwrap();
        assert_eq!(chat.trust, Some(Trust::Insecure));
        assert!(
            matches!(&chat.publish, Some(Publish::WebSocket { url, .. }) if url.source() == "wss://chat.example/ws")
        );
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            ("format = \"json\"", "subscribe_url"),
            ("subscribe_url = \"ftp://x/y\"", "subscribe_url"),
            ("subscribe_url = \"http://{topic}.x/y\"", "subscribe_url"),
            (
                "subscribe_url = \"/x\"\nseq_pointer = \"/seq\"",
                "seq_pointer",
            ),
            (
                "subscribe_url = \"/x\"\nformat = \"json\"\nts_pointer = \"ts\"",
                "ts_pointer",
            ),
            ("subscribe_url = \"/x\"\nts_unit = \"ms\"", "ts_unit"),
            (
                "subscribe_url = \"/x\"\nws_subprotocols = [\"a\"]",
                "ws_subprotocols",
            ),
            (
                "subscribe_url = \"ws://h/x\"\nevent_filter = [\"a\"]",
                "event_filter",
            ),
            (
                "subscribe_url = \"http://h/x\"\nformat = \"openai\"",
                "request_body",
            ),
            (
                "subscribe_url = \"http://h/x\"\nformat = \"openai\"\nrequest_body = '{\"stream\":false}'",
                "request_body",
            ),
            (
                "subscribe_url = \"http://h/x\"\nca_cert = \"ca.pem\"",
                "ca_cert",
            ),
            (
                "subscribe_url = \"https://h/x\"\nca_cert = \"ca.pem\"\ninsecure = true",
                "insecure",
            ),
            (
                "subscribe_url = \"http://h/x\"\npublish_body = \"{}\"",
                "publish_body",
            ),
            (
                "subscribe_url = \"http://h/x\"\nws_publish_frame = \"{{seq}}\"",
                "ws_publish_frame",
            ),
            (
                "subscribe_url = \"http://h/x\"\npublish_url = \"http://h/p\"\npublish_body = \"{{sequence}}\"",
                "publish_body",
            ),
            (
                "subscribe_url = \"http://h/x\"\nheaders = { \"a b\" = \"c\" }",
                "headers",
            ),
            ("subscribe_url = \"http://h/x\"\ntopic = \"a b\"", "topic"),
        ];
        for (text, key) in cases {
            assert_eq!(invalid(text).key, key, "{text}");
        }
    }

    #[test]
    fn a_manifest_never_shows_a_secret_header() {
        let target = raw(r#"
subscribe_url = "/x"
headers = { Authorization = "Bearer sk-123", "X-Api-Key" = "${KEY}", Accept = "text/plain" }
"#);
        let json = serde_json::to_value(&target).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "subscribe_url": "/x",
                "headers": {
                    "Accept": "text/plain",
                    "Authorization": "<redacted>",
                    "X-Api-Key": "${KEY}"
                }
            })
        );
    }

    #[test]
    fn flags_replace_the_keys_they_give() {
        let file = raw("subscribe_url = \"/a\"\nformat = \"json\"\nseq_pointer = \"/s\"");
        let flags = RawTarget {
            seq_pointer: Some("/n".to_owned()),
            ..RawTarget::default()
        };
        let merged = file.merge(flags);
        assert_eq!(merged.subscribe_url.as_deref(), Some("/a"));
        assert_eq!(merged.seq_pointer.as_deref(), Some("/n"));
        assert!(RawTarget::default().is_empty() && !merged.is_empty());
    }
}

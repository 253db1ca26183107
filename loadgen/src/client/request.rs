//! What opening a stream sends: the request line, headers and body of an
//! SSE request (GET, or a POST such as an OpenAI-style chat completion),
//! or the WebSocket upgrade's path and headers, its subprotocols and the
//! frames it sends once open; and, on a resumed SSE stream, the last event
//! id. Built once per connection, never per event. A foreign target's
//! publishes are written the same way ([`Request::head`] with
//! [`PUBLISH_DEFAULTS`]).

/// The header fields a stream request carries unless it sets its own.
pub const SSE_DEFAULTS: &[(&str, &str)] = &[
    ("Accept", "text/event-stream"),
    // `identity`: the parser reads the body's bytes as they come.
    ("Accept-Encoding", "identity"),
    ("Cache-Control", "no-cache"),
    ("User-Agent", "streamgauge-loadgen"),
];

/// The header fields a publish carries unless it sets its own.
pub const PUBLISH_DEFAULTS: &[(&str, &str)] = &[
    ("Accept-Encoding", "identity"),
    ("User-Agent", "streamgauge-loadgen"),
];

/// A stream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method (`GET`; a WebSocket always opens with `GET`).
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Extra header fields, in order; one of the same name replaces the
    /// client's default (`Accept`, `User-Agent`, `Content-Type`).
    pub headers: Vec<(String, String)>,
    /// The body (sent with `Content-Length`).
    pub body: Option<String>,
    /// A bearer token for this project's server, sent only to the host
    /// first asked (not across a redirect to another).
    pub token: Option<String>,
    /// `Last-Event-ID`: the id of the last event received, to resume after.
    pub last_event_id: Option<Vec<u8>>,
    /// WebSocket subprotocols offered (`Sec-WebSocket-Protocol`).
    pub subprotocols: Vec<String>,
    /// WebSocket text frames sent once the connection is open.
    pub on_open: Vec<String>,
}

impl Request {
    /// `GET path`, with a bearer `token`.
    pub fn get(path: impl Into<String>, token: Option<&str>) -> Self {
        Self {
            method: "GET".to_owned(),
            path: path.into(),
            headers: Vec::new(),
            body: None,
            token: token.map(str::to_owned),
            last_event_id: None,
            subprotocols: Vec::new(),
            on_open: Vec::new(),
        }
    }

    /// Whether it sets header `name` itself.
    pub fn sets(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The request head and body for `authority`, with the `defaults` it
    /// does not set itself, the token included only if `with_token`.
    pub fn head(&self, authority: &str, with_token: bool, defaults: &[(&str, &str)]) -> String {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {authority}\r\n",
            self.method, self.path
        );
        for &(name, value) in defaults {
            if !self.sets(name) {
                push_field(&mut head, name, value);
            }
        }
        if let Some(token) = self.token.as_deref().filter(|_| with_token) {
            push_field(&mut head, "Authorization", &format!("Bearer {token}"));
        }
        for (name, value) in &self.headers {
            push_field(&mut head, name, value);
        }
        if let Some(id) = &self.last_event_id {
            push_field(&mut head, "Last-Event-ID", &String::from_utf8_lossy(id));
        }
        if let Some(body) = &self.body {
            if !self.sets("Content-Type") {
                push_field(&mut head, "Content-Type", "application/json");
            }
            push_field(&mut head, "Content-Length", &body.len().to_string());
        }
        head.push_str("\r\n");
        if let Some(body) = &self.body {
            head.push_str(body);
        }
        head
    }

    /// The request a redirect with `status` makes of it: 307 and 308 keep
    /// the method and body; 301, 302 and 303 ask with `GET` and no body (as
    /// browsers do).
    pub fn redirected(&self, status: u16, path: String) -> Self {
        let keep = matches!(status, 307 | 308) || self.method == "GET";
        Self {
            method: if keep {
                self.method.clone()
            } else {
                "GET".to_owned()
            },
            body: if keep { self.body.clone() } else { None },
            path,
            ..self.clone()
        }
    }
}

/// The path and query of `url` (as a request line asks for them): an
/// absolute URL's, or `url` itself when it is a `/path` already.
pub fn path_of(url: &str) -> String {
    if url.starts_with('/') {
        return url.to_owned();
    }
    url::Url::parse(url).map_or_else(
        |_| url.to_owned(),
        |u| match u.query() {
            Some(query) => format!("{}?{query}", u.path()),
            None => u.path().to_owned(),
        },
    )
}

/// Appends `name: value` and CRLF to `head`.
fn push_field(head: &mut String, name: &str, value: &str) {
    head.push_str(name);
    head.push_str(": ");
    head.push_str(value);
    head.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_carries_its_body_and_given_headers_replace_defaults() {
        let request = Request {
            method: "POST".to_owned(),
            headers: vec![
                ("Authorization".to_owned(), "Bearer k".to_owned()),
                ("accept".to_owned(), "*/*".to_owned()),
            ],
            body: Some(r#"{"stream":true}"#.to_owned()),
            last_event_id: Some(b"41".to_vec()),
            ..Request::get("/v1/chat/completions", None)
        };
        let head = request.head("h:1", true, SSE_DEFAULTS);
        assert!(
            head.starts_with("POST /v1/chat/completions HTTP/1.1\r\nHost: h:1\r\n"),
            "{head}"
        );
        assert!(!head.contains("Accept: text/event-stream"), "{head}");
        for line in [
            "accept: */*\r\n",
            "Authorization: Bearer k\r\n",
            "Last-Event-ID: 41\r\n",
            "Content-Type: application/json\r\n",
            "Content-Length: 15\r\n\r\n{\"stream\":true}",
        ] {
            assert!(head.contains(line), "{line:?} not in {head}");
        }
        let get = request.redirected(302, "/moved".to_owned());
        assert_eq!((get.method.as_str(), get.body.as_deref()), ("GET", None));
        let kept = request.redirected(307, "/moved".to_owned());
        assert_eq!(kept.method, "POST");
        assert!(kept.body.is_some());
        assert_eq!(path_of("https://h:1/a/b?c=d#e"), "/a/b?c=d");
        assert_eq!(path_of("/x?y"), "/x?y");
        let token = Request::get("/t", Some("tok"));
        assert!(
            token
                .head("h", true, SSE_DEFAULTS)
                .contains("Authorization: Bearer tok\r\n")
        );
        assert!(
            !token
                .head("h", false, SSE_DEFAULTS)
                .contains("Authorization")
        );
    }
}

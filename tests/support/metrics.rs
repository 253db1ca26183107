//! Reading the server's `/metrics` exposition.

use std::collections::HashMap;
use std::fmt;

/// One scrape: every sample by its full name with labels, as exposed.
pub struct Metrics {
    samples: HashMap<String, f64>,
    text: String,
}

impl Metrics {
    /// Reads the answer to a `GET /metrics`.
    pub async fn read(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        Self::parse(response.text().await.expect("/metrics body"))
    }

    /// Reads an exposition's text.
    pub fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (key, value) = line.rsplit_once(' ').expect("sample line");
                (key.to_owned(), value.parse().expect("sample value"))
            })
            .collect();
        Self { samples, text }
    }

    /// The sample `key` (e.g. `streamgauge_connections_open{transport="sse"}`),
    /// 0 when the series does not exist yet.
    pub fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    /// The sample `name{transport="<transport>"}`.
    pub fn of(&self, name: &str, transport: &str) -> f64 {
        self.get(&format!("{name}{{transport=\"{transport}\"}}"))
    }

    /// Streams of `transport` ended for `reason`.
    pub fn disconnects(&self, transport: &str, reason: &str) -> f64 {
        self.get(&format!(
            "streamgauge_disconnects_total{{transport=\"{transport}\",reason=\"{reason}\"}}"
        ))
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

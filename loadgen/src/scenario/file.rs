//! Scenario files (TOML). Every mistake is reported with the file, the line
//! and what is wrong, such as `smoke.toml:12: a ramp needs \`from\` and \`to\``.
//!
//! ```toml
//! name = "checkout"
//! transport = "ws"            # sse | ws | mixed (half the clients on each)
//! stream = "topic"            # ticker | topic | tokens | replay
//! rate = 10                   # events/s per client (ticker, replay); 0 = as fast as read
//! size = 64                   # payload bytes
//! count = 0                   # ticker: events per stream, then the next stream; 0 = endless
//! consumer-delay = "10ms"     # time spent per event (slow readers)
//! churn = 0.1                 # disconnect-and-resume per client and second
//! publish-rate = 500          # topic publishes/s
//! nodes = 3                   # server nodes sharing the topic (1 to 16): clients and
//!                             # publishers round robin; without --url, that many local
//!                             # servers on a throwaway PostgreSQL cluster
//! thresholds = ["latency.p99<50ms", "gaps==0"]  # also latency.p99{phase=steady}<5ms,
//!                             # events_per_s{node=2}>100, abort:error_rate<5%
//! abort-grace = "5s"          # abort: thresholds are checked from this far into the run
//! server-args = ["--max-connections=250"]  # for a server started for it
//! tokens = { ttft = "200ms", tps = 50, count = 100 }
//! replay = { rows = 5000 }
//!
//! [[phase]]
//! kind = "ramp"               # ramp | steady | spike | burst | soak
//! duration = "10s"
//! from = 1
//! to = 100
//!
//! [[phase]]
//! kind = "burst"
//! duration = "5s"
//! clients = 200
//! rate = 1000                 # any phase: events/s per client for this phase
//! publish-rate = 5000         # any phase of a topic scenario: publishes/s
//! cooldown = "5s"             # burst only: then no clients for this long
//!
//! [[phase]]
//! kind = "steady"
//! duration = "20s"
//! clients = 100
//! abuse = "slowloris"         # slowloris | never-read | oversized | ping-flood | one-peer
//! abusers = 500               # misbehaving clients beside the others
//! ```
//!
//! A `capacity` phase is a scenario's only phase: a capacity search
//! (docs/loadgen.md, "Capacity"), each step one steady phase:
//!
//! ```toml
//! [[phase]]
//! kind = "capacity"
//! vary = "rate"               # clients | rate | publish-rate
//! start = 500                 # the first step's level
//! factor = 2.0                # each step this many times the last (or `step = 500`: this much more)
//! duration = "2s"             # each step's length
//! clients = 100               # the clients when not varying them
//! settle = "500ms"            # pause between steps
//! max-steps = 8               # growing steps at most (the knee is "above" the last if it held)
//! bisections = 4              # bisection steps at most
//! resolution = 0.05           # bisect until the gap is within this share of the knee
//! ```
//!
//! A foreign target (any SSE or WebSocket server) is a `[target]` table,
//! its keys those of [`RawTarget`] (docs/loadgen.md, "Foreign targets"),
//! with `request-rate` beside it for an `openai` target:
//!
//! ```toml
//! request-rate = 0.5          # requests/s per client (openai); 0 = back to back
//!
//! [target]
//! subscribe_url = "https://hub.example/topics/{topic}/events"
//! format = "json"
//! seq_pointer = "/message/seq"
//! ts_pointer = "/message/ts_us"
//! publish_url = "https://hub.example/topics/{topic}"
//! publish_body = '{"seq":{{seq}},"ts_us":{{ts_us}},"pad":"{{pad}}"}'
//! headers = { Authorization = "Bearer ${HUB_TOKEN}" }
//! ```
//!
//! Per-user tokens (docs/loadgen.md, "Per-user tokens") are an `[auth]`
//! table, its keys those of [`RawAuth`] (the `--jwt-*` flags replace them):
//!
//! ```toml
//! [auth]
//! jwt-key = "keys/es256.pem"  # an HS256 secret or a PEM private key
//! jwt-ttl = "5m"              # each token's lifetime (default 10m, at least 2s)
//! jwt-kid = "k1"              # the header's kid
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::auth::RawAuth;
use super::search::{Growth, Search, Vary};
use super::target::RawTarget;
use super::{
    Abuse, AbuseKind, Overrides, Phase, Scenario, Setting, StreamKind, TokenShape, Transport,
};

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct Error {
    path: PathBuf,
    line: Option<usize>,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawScenario {
    name: Option<String>,
    transport: Option<Transport>,
    stream: Option<StreamKind>,
    rate: Option<u64>,
    size: Option<usize>,
    count: Option<Spanned<u64>>,
    consumer_delay: Option<Spanned<String>>,
    churn: Option<Spanned<f64>>,
    publish_rate: Option<u64>,
    nodes: Option<Spanned<u32>>,
    #[serde(default)]
    thresholds: Vec<Spanned<String>>,
    abort_grace: Option<Spanned<String>>,
    tokens: Option<Spanned<RawTokens>>,
    replay: Option<Spanned<RawReplay>>,
    #[serde(default)]
    phase: Vec<Spanned<RawPhase>>,
    server_args: Option<Spanned<Vec<String>>>,
    target: Option<Spanned<RawTarget>>,
    request_rate: Option<Spanned<f64>>,
    auth: Option<Spanned<RawAuth>>,
}

impl RawScenario {
    /// Where in `text` `setting` is written, if it is; `phases` holds the
    /// span of each phase of the scenario (a burst's cool-down shares its
    /// burst's).
    fn span_of(
        &self,
        text: &str,
        setting: Setting,
        phases: &[Range<usize>],
    ) -> Option<Range<usize>> {
        match setting {
            Setting::Phases => phases.first().cloned(),
            Setting::Phase(n) => phases.get(n).cloned(),
            Setting::Churn => self.churn.as_ref().map(Spanned::span),
            Setting::Count => self.count.as_ref().map(Spanned::span),
            Setting::Tokens => self.tokens.as_ref().map(Spanned::span),
            Setting::Replay => self.replay.as_ref().map(Spanned::span),
            Setting::ServerArgs => self.server_args.as_ref().map(Spanned::span),
            Setting::Nodes => self.nodes.as_ref().map(Spanned::span),
            Setting::RequestRate => self.request_rate.as_ref().map(Spanned::span),
            Setting::Stream => self.target.as_ref().map(Spanned::span),
            Setting::Target(key) => Some(key_of_table(text, self.target.as_ref()?.span(), key)),
            Setting::Auth(key) => Some(key_of_table(text, self.auth.as_ref()?.span(), key)),
            Setting::Threshold(n) => self.thresholds.get(n).map(Spanned::span),
        }
    }
}

/// Where `key = …` is written in the table whose span is `table`, else the
/// table itself.
fn key_of_table(text: &str, table: Range<usize>, key: &str) -> Range<usize> {
    // A table's span may be its header alone: its keys run to the next
    // table.
    let end = text[table.start..]
        .match_indices("\n[")
        .map(|(at, _)| table.start + at)
        .find(|&at| at > table.start)
        .unwrap_or(text.len())
        .max(table.end);
    key_in(text, table.start..end, key).unwrap_or(table)
}

/// Where `key = …` is written within `span` of `text`, if it is.
fn key_in(text: &str, span: Range<usize>, key: &str) -> Option<Range<usize>> {
    let within = text.get(span.clone())?;
    within.match_indices(key).find_map(|(at, _)| {
        let before = within[..at].chars().next_back();
        let after = within[at + key.len()..].trim_start();
        let starts = before.is_none_or(|c| c.is_whitespace() || matches!(c, '{' | ',' | '"'));
        let rest = after.strip_prefix('"').unwrap_or(after).trim_start();
        (starts && rest.starts_with('=')).then(|| span.start + at..span.start + at + key.len())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    ttft: Option<Spanned<String>>,
    tps: Option<u64>,
    count: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplay {
    rows: u64,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum PhaseKind {
    Ramp,
    Steady,
    Spike,
    Burst,
    Soak,
    Capacity,
}

impl PhaseKind {
    fn name(self) -> &'static str {
        match self {
            PhaseKind::Ramp => "ramp",
            PhaseKind::Steady => "steady",
            PhaseKind::Spike => "spike",
            PhaseKind::Burst => "burst",
            PhaseKind::Soak => "soak",
            PhaseKind::Capacity => "capacity",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    kind: PhaseKind,
    name: Option<String>,
    duration: Spanned<String>,
    clients: Option<u32>,
    from: Option<u32>,
    to: Option<u32>,
    rate: Option<u64>,
    #[serde(rename = "publish-rate")]
    publish_rate: Option<u64>,
    abuse: Option<AbuseKind>,
    abusers: Option<u32>,
    cooldown: Option<Spanned<String>>,
    vary: Option<Vary>,
    start: Option<u64>,
    factor: Option<f64>,
    step: Option<u64>,
    settle: Option<Spanned<String>>,
    #[serde(rename = "max-steps")]
    max_steps: Option<u32>,
    bisections: Option<u32>,
    resolution: Option<f64>,
}

impl RawPhase {
    /// Whether it sets any key only a capacity phase has.
    fn searches(&self) -> bool {
        self.vary.is_some()
            || self.start.is_some()
            || self.factor.is_some()
            || self.step.is_some()
            || self.settle.is_some()
            || self.max_steps.is_some()
            || self.bisections.is_some()
            || self.resolution.is_some()
    }

    /// The search a capacity phase describes, each step `step_duration`
    /// long and its pauses `settle`, and the clients of its steps when it
    /// does not vary them; `Err`: what is wrong with it.
    fn search(
        &self,
        step_duration: Duration,
        settle: Option<Duration>,
    ) -> Result<(Search, Option<u32>), &'static str> {
        let defaults = Search::default();
        let vary = self.vary.unwrap_or(defaults.vary);
        let start = self.start.ok_or("needs `start`, the first step's level")?;
        if self.from.is_some() || self.to.is_some() || self.abuse.is_some() {
            return Err("takes no `from`, `to` or `abuse`");
        }
        let clients = match (vary, self.clients) {
            (Vary::Clients, Some(_)) => return Err("varies the clients: `start` says how many"),
            (Vary::Clients, None) => None,
            (_, None) => return Err("needs `clients` when it does not vary them"),
            (_, clients) => clients,
        };
        let growth = match (self.factor, self.step) {
            (Some(_), Some(_)) => return Err("takes `factor` or `step`, not both"),
            (Some(factor), None) => Growth::Factor(factor),
            (None, Some(step)) => Growth::Step(step),
            (None, None) => defaults.growth,
        };
        let search = Search {
            vary,
            start,
            growth,
            step_duration,
            settle: settle.unwrap_or(defaults.settle),
            max_steps: self.max_steps.unwrap_or(defaults.max_steps),
            bisections: self.bisections.unwrap_or(defaults.bisections),
            resolution: self.resolution.unwrap_or(defaults.resolution),
        };
        Ok((search, clients))
    }
}

/// The flags that replace a scenario file's keys they give: `--target-*`
/// those of `[target]`, `--jwt-*` those of `[auth]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags<'a> {
    /// The `--target-*` flags.
    pub target: Option<&'a RawTarget>,
    /// The `--jwt-*` flags.
    pub auth: Option<&'a RawAuth>,
}

/// Reads and validates the scenario file at `path`, the flags replacing
/// its keys they give.
///
/// # Errors
///
/// The file cannot be read, is not valid TOML for a scenario, or describes
/// an invalid scenario: the error names the file and, when it can, the line.
pub fn load(path: &Path, flags: Flags<'_>) -> Result<Scenario, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        path: path.to_owned(),
        line: None,
        message: format!("cannot read it: {e}"),
    })?;
    parse_with(&text, path, flags)
}

/// Parses a scenario from `text`, reporting errors against `path`.
///
/// # Errors
///
/// As [`load`].
pub fn parse(text: &str, path: &Path) -> Result<Scenario, Error> {
    parse_with(text, path, Flags::default())
}

/// [`parse`], the `flags` replacing the keys they give.
///
/// # Errors
///
/// As [`load`].
pub fn parse_with(text: &str, path: &Path, flags: Flags<'_>) -> Result<Scenario, Error> {
    let at = |span: Option<Range<usize>>, message: String| Error {
        path: path.to_owned(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let raw: RawScenario =
        toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
    let duration = |value: &Spanned<String>| {
        humantime::parse_duration(value.get_ref()).map_err(|e| {
            at(
                Some(value.span()),
                format!("{:?} is not a duration: {e}", value.get_ref()),
            )
        })
    };

    let mut scenario = Scenario {
        name: raw.name.clone().unwrap_or_else(|| {
            path.file_stem().map_or_else(
                || "scenario".to_owned(),
                |s| s.to_string_lossy().into_owned(),
            )
        }),
        ..Scenario::default()
    };
    scenario.apply(Overrides {
        transport: raw.transport,
        stream: raw.stream,
        rate: raw.rate,
        size: raw.size,
        count: raw.count.as_ref().map(|c| *c.get_ref()),
        consumer_delay: raw.consumer_delay.as_ref().map(duration).transpose()?,
        churn: raw.churn.as_ref().map(|c| *c.get_ref()),
        publish_rate: raw.publish_rate,
        nodes: raw.nodes.as_ref().map(|n| *n.get_ref()),
        request_rate: raw.request_rate.as_ref().map(|r| *r.get_ref()),
    });
    if let Some(tokens) = raw.tokens.as_ref().map(Spanned::get_ref) {
        scenario.tokens = TokenShape {
            ttft: match &tokens.ttft {
                Some(ttft) => duration(ttft)?,
                None => scenario.tokens.ttft,
            },
            tps: tokens.tps.unwrap_or(scenario.tokens.tps),
            tokens: tokens.count.unwrap_or(scenario.tokens.tokens),
        };
    }
    if let Some(replay) = &raw.replay {
        scenario.replay_rows = replay.get_ref().rows;
    }
    if let Some(args) = &raw.server_args {
        scenario.server_args = args.get_ref().clone();
    }
    for threshold in &raw.thresholds {
        let parsed = threshold
            .get_ref()
            .parse()
            .map_err(|e: super::threshold::Error| at(Some(threshold.span()), e.to_string()))?;
        scenario.thresholds.push(parsed);
    }
    if let Some(grace) = &raw.abort_grace {
        scenario.abort_grace = duration(grace)?;
    }
    if !raw.phase.is_empty() {
        scenario.phases.clear();
    }
    let mut spans = Vec::new();
    for phase in &raw.phase {
        let span = phase.span();
        let phase = phase.get_ref();
        let fail = |message: &str| {
            at(
                Some(span.clone()),
                format!("{} phase: {message}", phase.kind.name()),
            )
        };
        let length = duration(&phase.duration)?;
        if phase.kind == PhaseKind::Capacity {
            if raw.phase.len() > 1 {
                return Err(fail("a capacity phase is the scenario's only phase"));
            }
            let settle = phase.settle.as_ref().map(duration).transpose()?;
            let (search, clients) = phase.search(length, settle).map_err(fail)?;
            scenario.rate = phase.rate.unwrap_or(scenario.rate);
            scenario.publish_rate = phase.publish_rate.unwrap_or(scenario.publish_rate);
            let first = clients.unwrap_or_else(|| u32::try_from(search.start).unwrap_or(u32::MAX));
            let name = phase.name.as_deref().unwrap_or("capacity");
            scenario.phases.push(Phase::steady(name, first, length));
            scenario.search = Some(search);
            spans.push(span.clone());
            continue;
        }
        if phase.searches() {
            return Err(fail(
                "only a capacity phase has `vary`, `start`, `factor`, `step`, `settle`, \
                 `max-steps`, `bisections` and `resolution`",
            ));
        }
        let name = phase
            .name
            .clone()
            .unwrap_or_else(|| phase.kind.name().to_owned());
        let (from, to) = match (phase.kind, phase.clients, phase.from, phase.to) {
            (PhaseKind::Ramp, None, Some(from), Some(to)) => (from, to),
            (PhaseKind::Ramp, ..) => {
                return Err(fail("a ramp needs `from` and `to` (not `clients`)"));
            }
            (_, Some(clients), None, None) => (clients, clients),
            _ => return Err(fail("needs `clients` (and no `from`/`to`)")),
        };
        if phase.cooldown.is_some() && phase.kind != PhaseKind::Burst {
            return Err(fail("only a burst has a `cooldown`"));
        }
        let abuse = match (phase.abuse, phase.abusers) {
            (Some(kind), Some(clients)) => Some(Abuse { kind, clients }),
            (None, None) => None,
            _ => return Err(fail("`abuse` and `abusers` go together")),
        };
        let parsed = Phase {
            name,
            duration: length,
            from,
            to,
            rate: phase.rate,
            publish_rate: phase.publish_rate,
            abuse,
        };
        parsed.validate().map_err(|e| fail(&e))?;
        scenario.phases.push(parsed);
        spans.push(span.clone());
        if let Some(cooldown) = &phase.cooldown {
            scenario
                .phases
                .push(Phase::steady("cool-down", 0, duration(cooldown)?));
            spans.push(span.clone());
        }
    }
    let target = (raw.target.as_ref())
        .map(|t| t.get_ref().clone())
        .unwrap_or_default()
        .merge(flags.target.cloned().unwrap_or_default());
    let invalid = |e: super::Invalid| at(raw.span_of(text, e.setting, &spans), e.message);
    if !target.is_empty() {
        if let Some(stream) = raw.stream {
            return Err(invalid(super::Invalid::new(
                Setting::Stream,
                format!(
                    "a [target] decides what is streamed: leave `stream = \"{}\"` out",
                    stream.as_str()
                ),
            )));
        }
        scenario.set_target(target).map_err(invalid)?;
    }
    let auth = (raw.auth.as_ref())
        .map(|a| a.get_ref().clone())
        .unwrap_or_default()
        .merge(flags.auth.cloned().unwrap_or_default());
    if !auth.is_empty() {
        scenario.set_auth(&auth).map_err(invalid)?;
    }
    scenario.validate().map_err(invalid)?;
    Ok(scenario)
}

/// The line (from 1) of `offset` in `text`, at most the file's last line:
/// an error at the very end (an unclosed string) is on the last line, not on
/// one past it.
fn line_of(text: &str, offset: usize) -> usize {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    line.min(text.lines().count().max(1))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse_str(text: &str) -> Result<Scenario, String> {
        parse(text, Path::new("s.toml")).map_err(|e| e.to_string())
    }

    /// Found by the `scenario_file` fuzz target: an unclosed string runs to
    /// the end of a file that ends with a newline, and its error was put on
    /// a line past the last.
    #[test]
    fn an_error_at_the_end_is_on_the_last_line() {
        let err = parse_str("name = \"x\"\nduration = \"\"\"\"10s\"\nfrom = 1\n").unwrap_err();
        assert!(err.starts_with("s.toml:3: "), "{err}");
    }

    #[test]
    fn a_full_file_becomes_a_scenario() {
        let scenario = parse_str(
            r#"
name = "checkout"
transport = "ws"
stream = "topic"
publish-rate = 500
consumer-delay = "10ms"
churn = 0.1
nodes = 3
thresholds = ["latency.p99<50ms", "gaps==0"]
tokens = { ttft = "300ms", tps = 20, count = 10 }

[[phase]]
kind = "ramp"
duration = "10s"
from = 1
to = 100

[[phase]]
kind = "burst"
duration = "5s"
clients = 200
rate = 1000
cooldown = "2s"
"#,
        )
        .unwrap();
        assert_eq!(scenario.name, "checkout");
        assert_eq!(
            (scenario.transport, scenario.stream),
            (Transport::Ws, StreamKind::Topic)
        );
        assert_eq!(scenario.consumer_delay, Duration::from_millis(10));
        assert_eq!(scenario.nodes, 3);
        assert_eq!(scenario.thresholds.len(), 2);
        assert_eq!(scenario.tokens.ttft, Duration::from_millis(300));
        let shape: Vec<(u32, u32, u64)> = scenario
            .phases
            .iter()
            .map(|p| (p.from, p.to, p.duration.as_secs()))
            .collect();
        assert_eq!(shape, [(1, 100, 10), (200, 200, 5), (0, 0, 2)]);
        assert_eq!(scenario.rate_in(&scenario.phases[1]), 1000);
        assert_eq!(scenario.rate_in(&scenario.phases[0]), scenario.rate);
    }

    #[test]
    fn a_phase_may_publish_at_its_own_rate_and_bring_abusers() {
        let scenario = parse_str(
            r#"
stream = "topic"
publish-rate = 100

[[phase]]
kind = "steady"
duration = "5s"
clients = 10
publish-rate = 4000
abuse = "one-peer"
abusers = 300

[[phase]]
kind = "steady"
duration = "5s"
clients = 10
"#,
        )
        .unwrap();
        let [busy, calm] = &scenario.phases[..] else {
            panic!("two phases: {:?}", scenario.phases)
        };
        assert_eq!(scenario.publish_rate_in(busy), 4000);
        assert_eq!(scenario.publish_rate_in(calm), 100);
        assert_eq!(
            busy.abuse,
            Some(Abuse {
                kind: AbuseKind::OnePeer,
                clients: 300
            })
        );
        assert_eq!(calm.abuse, None);
    }

    #[test]
    fn a_capacity_phase_is_a_search_and_its_mistakes_name_the_line() {
        let scenario = parse_str(
            r#"
stream = "topic"

[[phase]]
kind = "capacity"
vary = "publish-rate"
start = 200
step = 100
duration = "2s"
clients = 30
settle = "1s"
bisections = 2
"#,
        )
        .unwrap();
        let search = scenario.search.clone().unwrap();
        assert_eq!(
            (search.vary, search.start, search.growth, search.bisections),
            (Vary::PublishRate, 200, Growth::Step(100), 2)
        );
        assert_eq!(
            (search.step_duration, search.settle),
            (Duration::from_secs(2), Duration::from_secs(1))
        );
        assert_eq!(scenario.max_clients(), 30);
        let by_clients =
            parse_str("[[phase]]\nkind = \"capacity\"\nstart = 50\nduration = \"1s\"\n").unwrap();
        assert_eq!(by_clients.search.unwrap().vary, Vary::Clients);
        let cases = [
            (
                "[[phase]]\nkind = \"capacity\"\nduration = \"1s\"\n",
                "s.toml:1: capacity phase: needs `start`",
            ),
            (
                "\n[[phase]]\nkind = \"capacity\"\nstart = 5\nduration = \"1s\"\nvary = \"rate\"\n",
                "s.toml:2: capacity phase: needs `clients` when it does not vary them",
            ),
            (
                "[[phase]]\nkind = \"capacity\"\nstart = 5\nduration = \"1s\"\nfactor = 2.0\nstep = 3\n",
                "s.toml:1: capacity phase: takes `factor` or `step`, not both",
            ),
            (
                "[[phase]]\nkind = \"capacity\"\nstart = 5\nduration = \"1s\"\nfactor = 0.5\n",
                "s.toml:1: capacity: factor 0.5 is not above 1",
            ),
            (
                "[[phase]]\nkind = \"steady\"\nduration = \"1s\"\nclients = 1\n\n\
                 [[phase]]\nkind = \"capacity\"\nstart = 5\nduration = \"1s\"\n",
                "s.toml:6: capacity phase: a capacity phase is the scenario's only phase",
            ),
            (
                "[[phase]]\nkind = \"steady\"\nduration = \"1s\"\nclients = 1\nstart = 3\n",
                "s.toml:1: steady phase: only a capacity phase has `vary`",
            ),
        ];
        for (text, expected) in cases {
            let message = parse_str(text).unwrap_err();
            assert!(message.starts_with(expected), "{text:?} gave {message:?}");
        }
    }

    #[test]
    fn a_target_table_is_read_and_its_mistakes_point_at_their_key() {
        let scenario = parse_str(
            r#"
request-rate = 2.5

[target]
subscribe_url = "http://127.0.0.1:9/v1/chat/completions"
format = "openai"
request_body = '{"model":"m","stream":true,"messages":[]}'
"#,
        )
        .unwrap();
        assert_eq!(scenario.stream, StreamKind::Tokens);
        assert_eq!(scenario.request_rate, 2.5);
        let spec = scenario.target_spec().unwrap().unwrap();
        assert_eq!(spec.request_method, "POST");
        let cases = [
            (
                "[target]\nsubscribe_url = \"/x\"\nformat = \"json\"\n\nseq_pointer = \"seq\"\n",
                "s.toml:5: [target] seq_pointer: \"seq\" is not a JSON pointer",
            ),
            (
                "stream = \"topic\"\n[target]\nsubscribe_url = \"/x\"\n",
                "s.toml:2: a [target] decides what is streamed",
            ),
            (
                "request-rate = 3.0\n",
                "s.toml:1: request-rate 3 is for an openai target",
            ),
            (
                "[target]\nsubscribe_url = \"http://h:1/x\"\n\n[[phase]]\nkind = \"steady\"\n\
                 duration = \"1s\"\nclients = 1\nabuse = \"slowloris\"\nabusers = 1\n",
                "s.toml:4: misbehaving clients",
            ),
        ];
        for (text, expected) in cases {
            let message = parse_str(text).unwrap_err();
            assert!(message.starts_with(expected), "{text:?} gave {message:?}");
        }
        let flags = RawTarget {
            subscribe_url: Some("ws://127.0.0.1:9/chat".to_owned()),
            ..RawTarget::default()
        };
        let flags = Flags {
            target: Some(&flags),
            auth: None,
        };
        let scenario =
            parse_with("[target]\nformat = \"text\"\n", Path::new("s.toml"), flags).unwrap();
        assert_eq!(
            (scenario.transport, scenario.stream),
            (Transport::Ws, StreamKind::Ticker)
        );
    }

    #[test]
    fn an_auth_table_mints_tokens_that_a_target_must_carry_somewhere() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("secret");
        std::fs::write(&key, "q".repeat(32)).unwrap();
        let auth = format!("[auth]\njwt-key = {:?}\njwt-ttl = \"30s\"\n", key);
        let scenario = parse_str(&format!("stream = \"topic\"\n\n{auth}")).unwrap();
        let minted = scenario.auth.unwrap();
        assert_eq!(
            (minted.jwt_key, minted.jwt_ttl),
            (key, Duration::from_secs(30))
        );
        let target = "[target]\nsubscribe_url = \"ws://127.0.0.1:9/chat\"\n";
        let err = parse_str(&format!("{target}\n{auth}")).unwrap_err();
        assert!(
            err.starts_with("s.toml:5: the target names its own server"),
            "{err}"
        );
        let carried = format!("{target}headers = {{ X-Jwt = \"{{{{token}}}}\" }}\n\n{auth}");
        assert!(parse_str(&carried).unwrap().auth.is_some());
        let err = parse_str("[auth]\njwt-key = \"/nonexistent\"\n").unwrap_err();
        assert!(
            err.starts_with("s.toml:2: /nonexistent: cannot read it"),
            "{err}"
        );
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let cases = [
            ("rate = \"fast\"\n", "s.toml:1:"),
            (
                "[[phase]]\nkind = \"ramp\"\nduration = \"5s\"\nclients = 3\n",
                "s.toml:1: ramp phase: a ramp needs",
            ),
            (
                "churn = 0.1\n\n[[phase]]\nkind = \"steady\"\nduration = \"soon\"\nclients = 3\n",
                "s.toml:5: \"soon\" is not a duration",
            ),
            (
                "thresholds = [\n  \"gaps==0\",\n  \"latancy.p99<1ms\",\n]\n",
                "s.toml:3: threshold \"latancy.p99<1ms\"",
            ),
            ("colour = \"blue\"\n", "s.toml:1:"),
            (
                "[[phase]]\nkind = \"steady\"\nduration = \"1s\"\nclients = 0\n",
                "s.toml:1: no phase has any client",
            ),
            (
                "name = \"x\"\nchurn = 500.0\n",
                "s.toml:2: churn 500 is not between",
            ),
            (
                "stream = \"replay\"\n\nreplay = { rows = 0 }\n",
                "s.toml:3: a replay scenario needs at least one row",
            ),
            (
                "name = \"x\"\nserver-args = [\"--quiet\"]\n",
                "s.toml:2: server argument \"--quiet\"",
            ),
            (
                "stream = \"topic\"\ncount = 5\n",
                "s.toml:2: a count of events per stream is for ticker",
            ),
            (
                "stream = \"topic\"\n\nnodes = 0\n",
                "s.toml:3: 0 nodes is not between 1 and 16",
            ),
            (
                "[[phase]]\nkind = \"steady\"\nduration = \"1s\"\nclients = 1\n\n\
                 [[phase]]\nkind = \"steady\"\nduration = \"1s\"\nclients = 2000000\n",
                "s.toml:6: phase \"steady\": 2000000 clients is over the limit",
            ),
            (
                "stream = \"ticker\"\n[[phase]]\nkind = \"steady\"\nduration = \"1s\"\n\
                 clients = 1\npublish-rate = 5\n",
                "s.toml:2: phase \"steady\": a publish rate is for topic",
            ),
            ("[[phase]]\nkind = \"wobble\"\n", "s.toml:2:"),
            (
                "[[phase]]\nkind = \"steady\"\nduration = \"1s\"\nclients = 1\nabuse = \"slowloris\"\n",
                "s.toml:1: steady phase: `abuse` and `abusers` go together",
            ),
            (
                "\n[[phase]]\nkind = \"steady\"\nduration = \"1s\"\nclients = 1\nabuse = \"ping-flood\"\nabusers = 0\n",
                "s.toml:2: steady phase: 0 abusers is not between 1 and",
            ),
            (
                "[[phase]]\nkind = \"steady\"\nduration = \"1s\"\nclients = 1\npublish-rate = 5\n",
                "s.toml:1: phase \"steady\": a publish rate is for topic scenarios only",
            ),
        ];
        for (text, expected) in cases {
            let message = parse_str(text).unwrap_err();
            assert!(message.starts_with(expected), "{text:?} gave {message:?}");
        }
    }
}

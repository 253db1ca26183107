//! Incremental Server-Sent Events parser: turns the bytes of a
//! `text/event-stream` body, fed in arbitrary pieces, into events, following
//! the WHATWG "event stream interpretation"
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>).
//!
//! This module owns line splitting (CRLF, LF or a lone CR, including a CRLF
//! split across two feeds), skipping of a leading UTF-8 BOM, field handling
//! (`data`, `event`, `id`, `retry`, comments) and event dispatch.
//!
//! It works on bytes and never decodes UTF-8: field names are compared
//! bytewise and values are handed out as they arrived. In the steady state it
//! does not allocate: the input, data, event-type and id buffers are reused,
//! and events are returned as slices into them. Parsing is linear in the
//! input: consumed bytes are never rescanned, and the search for a line end
//! resumes where the previous one stopped. Buffers are not bounded: a stream
//! that never ends a line, or an event with unbounded data, grows them.

/// The UTF-8 byte order mark, skipped once at the very start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The event type of an event that set none.
const DEFAULT_EVENT: &[u8] = b"message";

/// An incremental parser for one event stream.
///
/// Feed it bytes with [`feed`](Self::feed), then call
/// [`next_event`](Self::next_event) until it returns `None`; repeat.
#[derive(Debug, Clone)]
pub struct SseParser {
    /// Fed bytes; `input[..pos]` is consumed and dropped from time to time.
    input: Vec<u8>,
    /// Start of the unconsumed input: the start of the current line.
    pos: usize,
    /// `input[pos..scanned]` is known to hold no CR or LF. Always `>= pos`.
    scanned: usize,
    /// The last line ended with a CR at the end of the input: an LF at `pos`
    /// belongs to that line end and is skipped.
    skip_lf: bool,
    /// Nothing past a possible BOM has been looked at yet.
    at_start: bool,
    /// The interpretation state: buffers and counters.
    fields: Fields,
}

/// The state the field lines act on, apart from the input so that a line
/// (borrowed from the input) can be applied to it.
#[derive(Debug, Clone, Default)]
struct Fields {
    /// The data buffer: each `data` value followed by `\n`.
    data: Vec<u8>,
    /// The event type buffer; empty means `message`.
    event: Vec<u8>,
    /// The last event id buffer; persists across events.
    last_id: Vec<u8>,
    /// The reconnection time last set by a `retry` field.
    retry_ms: Option<u64>,
    /// Comment lines seen.
    comments: u64,
    /// `data` and `event` still hold the event last returned; they are
    /// cleared before the next line is applied.
    dispatched: bool,
}

/// One dispatched event, borrowed from the parser until its next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The event type: `b"message"` unless an `event` field set another.
    pub event: &'a [u8],
    /// The data: the `data` values joined by `\n`, without a trailing `\n`.
    pub data: &'a [u8],
    /// The last event id at dispatch (empty if none was ever set).
    pub id: &'a [u8],
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self {
            input: Vec::new(),
            pos: 0,
            scanned: 0,
            skip_lf: false,
            at_start: true,
            fields: Fields::default(),
        }
    }

    /// Appends `bytes` to the input. Call [`next_event`](Self::next_event)
    /// until it returns `None` afterwards, or the input keeps growing.
    pub fn feed(&mut self, bytes: &[u8]) {
        // Drop the consumed prefix once it is at least as long as what is
        // left: the copy is then no longer than the bytes consumed since the
        // last one, so compaction stays linear overall.
        if self.pos > 0 && self.pos >= self.input.len() - self.pos {
            self.input.drain(..self.pos);
            self.scanned -= self.pos;
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The next complete event in what was fed, or `None` once the input
    /// holds no further complete event. An event is complete at the blank
    /// line that ends it; one without that line is never dispatched.
    pub fn next_event(&mut self) -> Option<SseEvent<'_>> {
        let fields = &mut self.fields;
        if fields.dispatched {
            fields.data.clear();
            fields.event.clear();
            fields.dispatched = false;
        }
        if self.at_start && !self.skip_bom() {
            return None;
        }
        loop {
            if self.skip_lf {
                if *self.input.get(self.pos)? == b'\n' {
                    self.pos += 1;
                    self.scanned = self.pos;
                }
                self.skip_lf = false;
            }
            let start = self.pos;
            let Some(offset) = find_line_end(&self.input[self.scanned..]) else {
                self.scanned = self.input.len();
                return None;
            };
            let end = self.scanned + offset;
            let next = match self.input.get(end + 1) {
                _ if self.input[end] == b'\n' => end + 1,
                Some(b'\n') => end + 2,
                Some(_) => end + 1,
                None => {
                    self.skip_lf = true;
                    end + 1
                }
            };
            self.pos = next;
            self.scanned = next;
            if self.fields.apply_line(&self.input[start..end]) {
                break;
            }
        }
        let fields = &mut self.fields;
        fields.dispatched = true;
        Some(SseEvent {
            event: if fields.event.is_empty() {
                DEFAULT_EVENT
            } else {
                &fields.event
            },
            // Dispatch only happens with data, which ends with `\n`.
            data: &fields.data[..fields.data.len() - 1],
            id: &fields.last_id,
        })
    }

    /// Bytes held: input not yet parsed, and the data of an event not yet
    /// complete. A client bounds it against a server that never ends a
    /// line or an event.
    pub fn buffered(&self) -> usize {
        self.input.len() - self.pos + self.fields.data.len()
    }

    /// Comment lines (those starting with `:`, such as `: ping`
    /// keep-alives) seen so far.
    pub fn comments(&self) -> u64 {
        self.fields.comments
    }

    /// The last event id buffer: the value of the last `id` field without a
    /// NUL, empty if there was none.
    pub fn last_event_id(&self) -> &[u8] {
        &self.fields.last_id
    }

    /// The reconnection time set by the last valid `retry` field (all ASCII
    /// digits; saturating at `u64::MAX`), if any.
    pub fn retry_ms(&self) -> Option<u64> {
        self.fields.retry_ms
    }

    /// Skips a BOM at the very start of the stream. Returns `false` while
    /// the input is too short to tell.
    fn skip_bom(&mut self) -> bool {
        let available = &self.input[self.pos..];
        if available.len() < BOM.len() && BOM.starts_with(available) {
            return false;
        }
        if available.starts_with(BOM) {
            self.pos += BOM.len();
            self.scanned = self.scanned.max(self.pos);
        }
        self.at_start = false;
        true
    }
}

impl Fields {
    /// Applies one line (without its line end). Returns `true` if it
    /// dispatches an event: the data buffer then holds its data plus `\n`.
    fn apply_line(&mut self, line: &[u8]) -> bool {
        let Some(&first) = line.first() else {
            if self.data.is_empty() {
                self.event.clear();
                return false;
            }
            return true;
        };
        if first == b':' {
            self.comments += 1;
            return false;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry_ms = Some(value.iter().fold(0u64, |n, &d| {
                    n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                }));
            }
            // Unknown fields, ids with a NUL, retry values not all digits.
            _ => {}
        }
        false
    }
}

/// The index of the first CR or LF in `haystack`.
///
/// Scans a word at a time: lines are mostly long JSON payloads, so this is
/// where parsing spends its time.
fn find_line_end(haystack: &[u8]) -> Option<usize> {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    const CR: u64 = u64::from_ne_bytes([b'\r'; 8]);
    const LF: u64 = u64::from_ne_bytes([b'\n'; 8]);
    /// Whether some byte of `x` is zero (may have false positives only
    /// above a true zero byte, which the exact scan below sorts out).
    fn has_zero(x: u64) -> bool {
        x.wrapping_sub(LO) & !x & HI != 0
    }
    let mut chunks = haystack.chunks_exact(8);
    let mut base = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(word);
        if has_zero(word ^ CR) || has_zero(word ^ LF) {
            break;
        }
        base += 8;
    }
    haystack[base..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|i| base + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event as owned values: (event type, data, id).
    type Owned = (Vec<u8>, Vec<u8>, Vec<u8>);

    /// Everything a parse yields: the events, then the comment count, the
    /// last event id and the reconnection time at the end.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        events: Vec<Owned>,
        comments: u64,
        last_id: Vec<u8>,
        retry_ms: Option<u64>,
    }

    fn drain(parser: &mut SseParser, events: &mut Vec<Owned>) {
        while let Some(e) = parser.next_event() {
            events.push((e.event.to_vec(), e.data.to_vec(), e.id.to_vec()));
        }
    }

    /// Feeds `chunks` one by one, draining events after each.
    fn parse_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk);
            drain(&mut parser, &mut events);
        }
        Outcome {
            events,
            comments: parser.comments(),
            last_id: parser.last_event_id().to_vec(),
            retry_ms: parser.retry_ms(),
        }
    }

    fn parse(stream: &[u8]) -> Outcome {
        parse_chunks([stream])
    }

    fn ev(event: &str, data: &str, id: &str) -> Owned {
        (event.into(), data.into(), id.into())
    }

    fn events(stream: &[u8]) -> Vec<Owned> {
        parse(stream).events
    }

    #[test]
    fn spec_example_stock_ticker_joins_data_lines() {
        assert_eq!(
            events(b"data: YHOO\ndata: +2\ndata: 10\n\n"),
            [ev("message", "YHOO\n+2\n10", "")]
        );
    }

    #[test]
    fn spec_example_ids_and_leading_space() {
        let out = parse(
            b": test stream\n\ndata: first event\nid: 1\n\n\
              data:second event\nid\n\ndata:  third event\n\n",
        );
        assert_eq!(
            out.events,
            [
                ev("message", "first event", "1"),
                ev("message", "second event", ""),
                ev("message", " third event", ""),
            ]
        );
        assert_eq!(out.comments, 1);
    }

    #[test]
    fn spec_example_empty_data_and_undispatched_tail() {
        // `data` alone appends an empty line; the last block has no blank
        // line after it, so it is never dispatched.
        assert_eq!(
            events(b"data\n\ndata\ndata\n\ndata:"),
            [ev("message", "", ""), ev("message", "\n", "")]
        );
    }

    #[test]
    fn spec_example_space_after_colon_is_optional() {
        assert_eq!(
            events(b"data:test\n\ndata: test\n\n"),
            [ev("message", "test", ""), ev("message", "test", "")]
        );
    }

    #[test]
    fn line_ends_crlf_cr_lf_and_mixed() {
        let want = [ev("e", "a\nb", "7"), ev("message", "c", "7")];
        for stream in [
            &b"event: e\r\nid: 7\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"[..],
            b"event: e\rid: 7\rdata: a\rdata: b\r\rdata: c\r\r",
            b"event: e\nid: 7\ndata: a\ndata: b\n\ndata: c\n\n",
            b"event: e\r\nid: 7\rdata: a\ndata: b\r\n\rdata: c\n\r\n",
        ] {
            assert_eq!(
                events(stream),
                want,
                "{:?}",
                String::from_utf8_lossy(stream)
            );
        }
    }

    #[test]
    fn crlf_split_across_feeds_is_one_line_end() {
        // Were the LF a second line end, "a" would be dispatched alone.
        let out = parse_chunks([&b"data: a\r"[..], b"\n", b"data: b\r", b"\n\r", b"\n"]);
        assert_eq!(out.events, [ev("message", "a\nb", "")]);
        // A lone CR at the end of a feed, followed by something else.
        let out = parse_chunks([&b"data: a\r"[..], b"\r"]);
        assert_eq!(out.events, [ev("message", "a", "")]);
    }

    #[test]
    fn comments_are_counted_and_not_dispatched() {
        let out = parse(b": ping\n\n:\n:x: y\ndata: 1\n: in the middle\n\n: ping\n\n");
        assert_eq!(out.events, [ev("message", "1", "")]);
        assert_eq!(out.comments, 5);
    }

    #[test]
    fn fields_with_and_without_space_and_colon() {
        // Only one space is removed; a field without a colon has an empty
        // value; unknown fields are ignored; field names are case-sensitive.
        let out = parse(
            b"event:up\ndata:  two\ndata\ndata:\nfoo: bar\nData: x\nid:\n\nevent: e\nevent\ndata: d\n\n",
        );
        assert_eq!(
            out.events,
            [ev("up", " two\n\n", ""), ev("message", "d", "")]
        );
    }

    #[test]
    fn id_persists_and_nul_ids_are_ignored() {
        let out = parse(b"id: 1\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nid\ndata: d\n\n");
        assert_eq!(
            out.events,
            [
                ev("message", "a", "1"),
                ev("message", "b", "1"),
                ev("message", "c", "1"),
                ev("message", "d", ""),
            ]
        );
        // An id without data dispatches nothing but still sets the id.
        let out = parse(b"id: 9\n\n");
        assert!(out.events.is_empty());
        assert_eq!(out.last_id, b"9");
    }

    #[test]
    fn retry_needs_only_digits() {
        assert_eq!(parse(b"retry: 1500\n").retry_ms, Some(1500));
        assert_eq!(parse(b"retry: 1500\nretry: 15x\n").retry_ms, Some(1500));
        assert_eq!(parse(b"retry: -1\n").retry_ms, None);
        assert_eq!(parse(b"retry:\n").retry_ms, None);
        assert_eq!(parse(b"retry:  1\n").retry_ms, None);
        assert_eq!(
            parse(b"retry: 99999999999999999999999\n").retry_ms,
            Some(u64::MAX)
        );
    }

    #[test]
    fn blank_line_without_data_resets_event_type() {
        assert_eq!(
            events(b"event: lost\n\ndata: x\n\n"),
            [ev("message", "x", "")]
        );
    }

    #[test]
    fn bom_is_skipped_once_even_when_split() {
        let stream = b"\xEF\xBB\xBFdata: a\n\n";
        for split in 0..=stream.len() {
            let out = parse_chunks([&stream[..split], &stream[split..]]);
            assert_eq!(out.events, [ev("message", "a", "")], "split at {split}");
        }
        // A second BOM is part of the field name, which is then unknown.
        assert!(events(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n").is_empty());
        // Not a BOM: the bytes are kept.
        assert!(events(b"\xEF\xBBdata: a\n\n\xEF\xBB\xBFdata: b\n\n").is_empty());
    }

    #[test]
    fn event_without_final_blank_line_is_not_dispatched() {
        let mut parser = SseParser::new();
        parser.feed(b"data: a\n\ndata: b\nid: 2\n");
        assert_eq!(
            parser.next_event().map(|e| e.data.to_vec()),
            Some(b"a".to_vec())
        );
        assert_eq!(parser.next_event(), None);
        assert_eq!(parser.next_event(), None);
        parser.feed(b"\n");
        let e = parser.next_event().expect("the blank line completes it");
        assert_eq!((e.data, e.id), (&b"b"[..], &b"2"[..]));
    }

    #[test]
    fn steady_state_reuses_buffers() {
        let event = b"id: 123\ndata: {\"seq\":123,\"data\":\"xxxxxxxx\"}\n\n";
        let stream: Vec<u8> = event.repeat(1000);
        let mut parser = SseParser::new();
        let run = |parser: &mut SseParser| {
            let mut n = 0;
            for chunk in stream.chunks(1000) {
                parser.feed(chunk);
                while parser.next_event().is_some() {
                    n += 1;
                }
            }
            assert_eq!(n, 1000);
        };
        run(&mut parser);
        let before = (
            parser.input.as_ptr(),
            parser.input.capacity(),
            parser.fields.data.as_ptr(),
            parser.fields.data.capacity(),
            parser.fields.last_id.as_ptr(),
        );
        for _ in 0..10 {
            run(&mut parser);
        }
        let after = (
            parser.input.as_ptr(),
            parser.input.capacity(),
            parser.fields.data.as_ptr(),
            parser.fields.data.capacity(),
            parser.fields.last_id.as_ptr(),
        );
        assert_eq!(before, after);
        assert!(parser.input.capacity() < 4000);
    }

    #[test]
    fn find_line_end_matches_naive_search() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let len = rng.usize(0..40);
            let hay: Vec<u8> = (0..len)
                .map(|_| match rng.u8(0..20) {
                    0 => b'\r',
                    1 => b'\n',
                    _ => rng.u8(..),
                })
                .collect();
            let naive = hay.iter().position(|&b| b == b'\r' || b == b'\n');
            assert_eq!(find_line_end(&hay), naive, "{hay:?}");
        }
    }

    /// Builds a varied stream of `count` events, with the outcome the spec
    /// prescribes, worked out independently of the parser. Values hold
    /// multi-byte UTF-8 now and then.
    fn varied_stream(rng: &mut fastrand::Rng, count: usize) -> (Vec<u8>, Outcome) {
        let mut stream = b"\xEF\xBB\xBF".to_vec();
        let mut events = Vec::new();
        let mut comments = 0;
        let mut last_id = Vec::new();
        let mut retry_ms = None;
        // A line end, but never an LF right after a lone CR: that would
        // make one CRLF of two line ends.
        let mut prev_cr = false;
        let mut eol = |rng: &mut fastrand::Rng| -> &'static [u8] {
            let choice = if prev_cr {
                rng.usize(1..3)
            } else {
                rng.usize(0..3)
            };
            prev_cr = choice == 2;
            [&b"\n"[..], b"\r\n", b"\r"][choice]
        };
        for i in 0..count {
            if rng.u8(0..4) == 0 {
                stream.extend_from_slice(b": ping");
                stream.extend_from_slice(eol(rng));
                comments += 1;
            }
            if rng.u8(0..5) == 0 {
                stream.extend_from_slice(b"retry:");
                let ms = rng.u64(0..100_000);
                stream.extend_from_slice(ms.to_string().as_bytes());
                stream.extend_from_slice(eol(rng));
                retry_ms = Some(ms);
            }
            let mut event = b"message".to_vec();
            if rng.bool() {
                event = format!("kind{}", rng.u8(..)).into_bytes();
                stream.extend_from_slice(if rng.bool() { b"event: " } else { b"event:" });
                stream.extend_from_slice(&event);
                stream.extend_from_slice(eol(rng));
            }
            if rng.bool() {
                last_id = i.to_string().into_bytes();
                stream.extend_from_slice(b"id: ");
                stream.extend_from_slice(&last_id);
                stream.extend_from_slice(eol(rng));
            }
            let mut data = Vec::new();
            for line in 0..rng.usize(1..4) {
                if line > 0 {
                    data.push(b'\n');
                }
                let value = match rng.u8(0..5) {
                    0 => Vec::new(),
                    1 => b" leading space".to_vec(),
                    2 => "é€𝄞 ünï".as_bytes().to_vec(),
                    _ => format!("{{\"seq\":{i},\"x\":\"{}\"}}", "y".repeat(rng.usize(0..20)))
                        .into_bytes(),
                };
                data.extend_from_slice(&value);
                stream.extend_from_slice(b"data: ");
                stream.extend_from_slice(&value);
                stream.extend_from_slice(eol(rng));
                if rng.u8(0..6) == 0 {
                    stream.extend_from_slice(b":mid-event comment");
                    stream.extend_from_slice(eol(rng));
                    comments += 1;
                }
            }
            stream.extend_from_slice(eol(rng));
            events.push((event, data, last_id.clone()));
        }
        // A trailing incomplete event is never dispatched.
        stream.extend_from_slice(b"data: never dispatched\r\n");
        let outcome = Outcome {
            events,
            comments,
            last_id,
            retry_ms,
        };
        (stream, outcome)
    }

    #[test]
    fn any_chunking_yields_the_same_events() {
        let mut rng = fastrand::Rng::with_seed(0x5_5E);
        for _ in 0..4 {
            let (stream, want) = varied_stream(&mut rng, 30);
            let whole = parse(&stream);
            assert_eq!(whole, want);
            // Every single split point.
            for split in 0..=stream.len() {
                let got = parse_chunks([&stream[..split], &stream[split..]]);
                assert_eq!(got, whole, "split at {split}");
            }
            // Byte by byte.
            assert_eq!(parse_chunks(stream.chunks(1)), whole);
            // Random multi-splits, empty chunks included.
            for round in 0..300 {
                let mut cuts: Vec<usize> = (0..rng.usize(1..40))
                    .map(|_| rng.usize(0..=stream.len()))
                    .collect();
                cuts.push(0);
                cuts.push(stream.len());
                cuts.sort_unstable();
                let chunks = cuts.windows(2).map(|w| &stream[w[0]..w[1]]);
                assert_eq!(parse_chunks(chunks), whole, "round {round}, cuts {cuts:?}");
            }
        }
    }

    /// Asserts that `stream` cut at every one and every two points parses
    /// as `want`.
    fn assert_every_cut(stream: &[u8], want: &Outcome) {
        for first in 0..=stream.len() {
            let got = parse_chunks([&stream[..first], &stream[first..]]);
            assert_eq!(got, *want, "cut at {first}");
            for second in first..=stream.len() {
                let (a, rest) = stream.split_at(first);
                let (b, c) = rest.split_at(second - first);
                assert_eq!(parse_chunks([a, b, c]), *want, "cuts at {first}, {second}");
            }
        }
    }

    #[test]
    fn every_one_and_two_cut_split_of_varied_streams() {
        let mut rng = fastrand::Rng::with_seed(0x2_C07);
        for _ in 0..2 {
            let (stream, want) = varied_stream(&mut rng, 5);
            assert!((150..700).contains(&stream.len()), "{}", stream.len());
            assert_every_cut(&stream, &want);
        }
    }

    #[test]
    fn multi_byte_characters_and_crlf_survive_any_cut() {
        // 2-, 3- and 4-byte characters in the event type, id and data;
        // CRLF line ends, so that cuts fall between CR and LF too.
        let stream = "event: ünï\r\nid: €1\r\ndata: é\r\ndata: 𝄞€\r\n\r\n\
                      : ç\r\ndata:€\r\n\r\n"
            .as_bytes();
        let want = Outcome {
            events: vec![ev("ünï", "é\n𝄞€", "€1"), ev("message", "€", "€1")],
            comments: 1,
            last_id: "€1".into(),
            retry_ms: None,
        };
        assert_every_cut(stream, &want);
        // Byte by byte, each character arrives in as many pieces as it has.
        assert_eq!(parse_chunks(stream.chunks(1)), want);
    }
}

-- The load generator's run history: one row per run, identified by its
-- invocation (run_id, shared by every run of a suite or of repetitions),
-- scenario, transport and repetition. Its key figures are columns, to list
-- and plot without parsing JSON; the whole summary.json is kept beside them,
-- and its HDR histograms are in run_histograms.
--
-- Valid in SQLite and PostgreSQL alike, read through sqlx's Any driver:
-- no BOOLEAN (the Any driver cannot read SQLite's), so flags are 0/1
-- BIGINTs; no binary column (no type name is binary in both dialects), so
-- histograms are base64 TEXT.
CREATE TABLE runs (
    run_id TEXT NOT NULL,
    scenario TEXT NOT NULL,
    transport TEXT NOT NULL,
    -- 1-based.
    repeat BIGINT NOT NULL,
    -- Recording order over the whole history (1, 2, ...): an invocation's
    -- runs in the order they ran, and invocations in the order they ended,
    -- whatever the clocks said.
    seq BIGINT NOT NULL,
    -- RFC 3339, UTC, to the second: sorts as time.
    started_at TEXT NOT NULL,
    label TEXT,
    stream TEXT NOT NULL,
    clients BIGINT NOT NULL,
    duration_s DOUBLE PRECISION NOT NULL,
    git_commit TEXT,
    -- 0 or 1; NULL outside a git checkout.
    git_dirty BIGINT,
    cores BIGINT NOT NULL,
    memory_mib DOUBLE PRECISION,
    kernel TEXT,
    events_per_s DOUBLE PRECISION NOT NULL,
    latency_p50_us BIGINT,
    latency_p99_us BIGINT,
    error_rate DOUBLE PRECISION,
    connect_success DOUBLE PRECISION,
    server_cpu_pct DOUBLE PRECISION,
    server_rss_peak_mib DOUBLE PRECISION,
    -- 0 or 1.
    passed BIGINT NOT NULL,
    -- pass, warn or fail.
    verdict TEXT NOT NULL,
    -- summary.json, whole (the exact scenario is in manifest.scenario).
    summary TEXT NOT NULL,
    PRIMARY KEY (run_id, scenario, transport, repeat)
);

-- Listings, labels and trends go newest first by recording order.
CREATE INDEX runs_by_seq ON runs (seq);
CREATE INDEX runs_by_label ON runs (label, seq);
CREATE INDEX runs_by_scenario ON runs (scenario, transport, seq);

-- A run's histograms (µs), by name: latency, end_to_end, from_publish,
-- connect, first_event, reconnect, publish.
CREATE TABLE run_histograms (
    run_id TEXT NOT NULL,
    scenario TEXT NOT NULL,
    transport TEXT NOT NULL,
    repeat BIGINT NOT NULL,
    name TEXT NOT NULL,
    -- HdrHistogram's V2 + DEFLATE encoding, base64 (standard, padded): what
    -- other HdrHistogram libraries read too, and what merges exactly.
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, scenario, transport, repeat, name),
    FOREIGN KEY (run_id, scenario, transport, repeat)
        REFERENCES runs (run_id, scenario, transport, repeat) ON DELETE CASCADE
);

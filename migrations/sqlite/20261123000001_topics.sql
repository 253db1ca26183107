-- Durable topics: one row per topic holding the last seq assigned (kept even
-- when retention has deleted every event), and the events themselves.
CREATE TABLE topics (
    name TEXT PRIMARY KEY NOT NULL,
    head INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    -- When the server accepted the publish, µs since the Unix epoch.
    pts INTEGER NOT NULL,
    -- The payload as one line of JSON, exactly as subscribers receive it.
    data TEXT NOT NULL,
    PRIMARY KEY (topic, seq)
) WITHOUT ROWID;

-- Retention by age.
CREATE INDEX events_by_pts ON events (pts);

-- Idempotent publishing: each topic's idempotency keys, with the seq the
-- first publish under the key was stored as and the SHA-256 of its stored
-- body. The primary key is the unique index that lets one publish per key
-- and topic be stored; keys older than --idempotency-window are deleted.
CREATE TABLE idempotency_keys (
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    -- SHA-256 of the event's data, as stored (one line of JSON).
    digest BLOB NOT NULL,
    -- When the key was first used: the event's pts, µs since the Unix epoch.
    created INTEGER NOT NULL,
    PRIMARY KEY (topic, key)
) WITHOUT ROWID;

-- Expiry by age.
CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created);

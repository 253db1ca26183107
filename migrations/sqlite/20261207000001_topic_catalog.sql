-- What an operator sees of each topic without scanning its events: the bytes
-- of its retained payloads, its last publish, and when a node last had a
-- live subscriber to it (topics idle past --topic-idle-expiry are removed).
ALTER TABLE topics ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
-- µs since the Unix epoch; NULL: never published since this column exists.
ALTER TABLE topics ADD COLUMN last_pts INTEGER;
ALTER TABLE topics ADD COLUMN watched_at INTEGER;

UPDATE topics SET
    bytes = (SELECT COALESCE(SUM(octet_length(data)), 0) FROM events WHERE topic = topics.name),
    last_pts = (SELECT MAX(pts) FROM events WHERE topic = topics.name);

-- Retention now trims topic by topic along the primary key (each topic's
-- rule decides), so the global index by age is no longer read.
DROP INDEX events_by_pts;

-- Stream entries history could not store: undecodable, or refused by the
-- database every time (ingest sets them aside so everything after them flows).
-- Kept with the raw entry and the reason, for an operator to look at.
CREATE TABLE dead_letters (
    stream_seq BIGINT PRIMARY KEY,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL,
    recorded_at_ms BIGINT NOT NULL
);

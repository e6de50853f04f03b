-- Files attached to messages (see migrations-sqlite for the same on SQLite).
-- `attachments` holds the message's attachments as JSON (NULL when none);
-- `attachment_names` their names, searched with the body; the table
-- `message_attachments` says which stored message carries which file.
ALTER TABLE messages ADD COLUMN attachments TEXT;
ALTER TABLE messages ADD COLUMN attachment_names TEXT NOT NULL DEFAULT '';

CREATE TABLE message_attachments (
    attachment_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (attachment_id, conversation_id, seq)
);

DROP INDEX messages_search;
CREATE INDEX messages_search ON messages USING GIN (to_tsvector('simple', body || ' ' || attachment_names));

-- Files attached to messages (see migrations-postgres for the same on
-- PostgreSQL). `attachments` holds the message's attachments as JSON (NULL
-- when none); `attachment_names` their names, searched with the body; the
-- table `message_attachments` says which stored message carries which file.
ALTER TABLE messages ADD COLUMN attachments TEXT;
ALTER TABLE messages ADD COLUMN attachment_names TEXT NOT NULL DEFAULT '';

CREATE TABLE message_attachments (
    attachment_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (attachment_id, conversation_id, seq)
);

-- The full-text index gets a second column, the names: rebuilt from the table.
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_update;
DROP TRIGGER messages_fts_delete;
DROP TABLE messages_fts;

CREATE VIRTUAL TABLE messages_fts USING fts5(
    body,
    attachment_names,
    content = 'messages',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, body, attachment_names) VALUES (new.rowid, new.body, new.attachment_names);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, attachment_names ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body, attachment_names)
        VALUES ('delete', old.rowid, old.body, old.attachment_names);
    INSERT INTO messages_fts (rowid, body, attachment_names) VALUES (new.rowid, new.body, new.attachment_names);
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body, attachment_names)
        VALUES ('delete', old.rowid, old.body, old.attachment_names);
END;

-- Conversations, membership, messages and read markers.
-- Written in the SQL that SQLite and PostgreSQL share; times are Unix milliseconds.

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT,
    -- "<lower user id>:<higher user id>" for direct conversations, so there is
    -- exactly one per pair; NULL for groups.
    direct_key TEXT UNIQUE,
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    joined_at_ms BIGINT NOT NULL,
    -- Set when the member was removed or left: the seq of that system message.
    -- A former member sees the conversation up to it and nothing after.
    removed_at_seq BIGINT,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX conversation_members_by_user ON conversation_members (user_id);

-- One row per message, written by the stream consumer. The keys make every
-- insert idempotent: a redelivered stream message changes nothing.
CREATE TABLE messages (
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    -- Position in the CHAT stream: the order of catch-up across conversations.
    stream_seq BIGINT NOT NULL UNIQUE,
    sender_id TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at_ms BIGINT NOT NULL,
    -- JSON of the SystemEvent for system messages (membership changes, renames).
    system_event TEXT,
    -- Edits and deletion (a deleted message keeps its row with an empty body),
    -- and the stream position of the latest change, for catch-up.
    edited_at_ms BIGINT NOT NULL DEFAULT 0,
    deleted_at_ms BIGINT NOT NULL DEFAULT 0,
    change_stream_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (sender_id, client_msg_id)
);

CREATE INDEX messages_by_change ON messages (change_stream_seq);

-- How far each member has read each conversation (seq, never backwards), the
-- device that moved it last, and the stream position of that move (catch-up
-- sends the markers that moved after a device's cursor).
CREATE TABLE read_markers (
    conversation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    device_id TEXT NOT NULL,
    stream_seq BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX read_markers_by_stream_seq ON read_markers (stream_seq);

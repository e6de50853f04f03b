-- A member may mute a conversation: notification pushes nothing of it to
-- them (unread counts are unchanged). NULL: not muted.
ALTER TABLE conversation_members ADD COLUMN muted_at_ms BIGINT;

-- Reports of messages, kept for moderators. `context` is JSON: the reported
-- message and the messages around it as they read when it was reported, so a
-- later edit or deletion does not take the evidence away.
CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    reporter_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    context TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- 'open' until a moderator acts on it.
    status TEXT NOT NULL,
    resolved_by TEXT,
    resolution TEXT,
    resolved_at_ms BIGINT,
    UNIQUE (reporter_id, message_id)
);

CREATE INDEX reports_by_status ON reports (status, created_at_ms);

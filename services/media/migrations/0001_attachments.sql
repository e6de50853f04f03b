-- Attachments and how many bytes each user stores.
-- Written in the SQL that SQLite and PostgreSQL share; times are Unix milliseconds.

CREATE TABLE attachments (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- Found from the bytes once enough of them arrived; '' until then.
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    has_thumbnail BIGINT NOT NULL,
    -- The thumbnail's content type, '' without one.
    thumbnail_type TEXT NOT NULL,
    blurhash TEXT NOT NULL,
    -- 'uploading' while the bytes arrive, 'stored' once all of them are.
    state TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- The conversation a message of the owner attached it in (NULL until
    -- then), and when that was last asked for (a retried send asks again).
    conversation_id TEXT,
    claimed_at_ms BIGINT NOT NULL
);

CREATE INDEX attachments_by_state ON attachments (state, created_at_ms);
CREATE INDEX attachments_by_claim ON attachments (claimed_at_ms);

-- The bytes each user's attachments take, uploads under way included:
-- reserved before the first byte is stored, so no user outgrows the quota.
CREATE TABLE usage (
    user_id TEXT PRIMARY KEY,
    used_bytes BIGINT NOT NULL
);

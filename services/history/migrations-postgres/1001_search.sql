-- Full-text search of message bodies (PostgreSQL only; see migrations-sqlite
-- for the same with FTS5). The 'simple' configuration does no stemming, so
-- every language is treated alike, as FTS5's unicode61 tokenizer does.
CREATE INDEX messages_search ON messages USING GIN (to_tsvector('simple', body));

-- Catch-up reads a user's messages in stream order, a page at a time. Without
-- this index each page read every message of each of the user's conversations
-- (by the primary key, then filtered on stream_seq and sorted), so catching up
-- on 100,000 messages of one conversation read it 200 times over. With it, a
-- page seeks each conversation's range of stream positions directly; `seq`
-- is here so the check of a removed member's horizon needs no table row.
CREATE INDEX messages_by_conversation_stream ON messages (conversation_id, stream_seq, seq);

-- An operator may deactivate a user: they can no longer log in or refresh,
-- and every device of theirs is revoked. NULL while active.
ALTER TABLE users ADD COLUMN deactivated_at_ms BIGINT;

-- An operator may erase a user: the profile is scrubbed (username and
-- display name replaced, password removed), every device and refresh token
-- deleted. The row stays, so ids elsewhere still name somebody. NULL unless erased.
ALTER TABLE users ADD COLUMN erased_at_ms BIGINT;

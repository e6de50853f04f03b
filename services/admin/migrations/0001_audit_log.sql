-- Every operator action, whether it succeeded or not: who, what, on what,
-- with which details, and how it ended. Never changed, only added to.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    operator TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    -- JSON object of the request's details.
    details TEXT NOT NULL,
    -- "ok", or the error the action ended with.
    outcome TEXT NOT NULL
);

CREATE INDEX audit_log_by_time ON audit_log (at_ms, id);

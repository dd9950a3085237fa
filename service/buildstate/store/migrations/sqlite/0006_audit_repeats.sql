-- Repeated denials are one row (issue 13): the denials of one source, actor, action and status within
-- one window share a repeat_key, and each repeat adds one to `repeats` and moves `last_at`, so a flood of
-- made-up credentials cannot fill the log. Other rows have no repeat_key (NULLs never conflict).
ALTER TABLE audit_log ADD COLUMN repeat_key TEXT;
ALTER TABLE audit_log ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD COLUMN last_at TEXT;
CREATE UNIQUE INDEX audit_log_repeat ON audit_log (repeat_key);

-- The audit log: every change, replay, refusal and denial (store/audit.py).

-- name: insert
-- Entries with the same repeat_key are one row whose repeats counts them (repeated denials).
INSERT INTO audit_log (at, actor, action, target, outcome, status_code, request_id, source, detail, repeat_key)
VALUES (:at, :actor, :action, :target, :outcome, :status_code, :request_id, :source, :detail, :repeat_key)
ON CONFLICT (repeat_key) DO UPDATE SET repeats = audit_log.repeats + 1, last_at = excluded.at

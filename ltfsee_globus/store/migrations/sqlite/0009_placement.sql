-- 9: which tapes are busy (placement asks per copy), and files that fail without a recall (no copy in a library we may use) count as failed
CREATE INDEX files_tape ON files (tape, status);
CREATE TRIGGER files_total_insert_failed AFTER INSERT ON files
    WHEN NEW.status = 'failed' BEGIN
    UPDATE tallies SET n = n + 1 WHERE name = 'total:failed';
END;


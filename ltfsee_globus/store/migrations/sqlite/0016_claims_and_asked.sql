-- 16: a claim changes batch_id and status of each file it takes: the files
-- not in a batch, and those not waiting for a retry, leave these two
-- indexes, so a claim does not touch a page of them for each file (at a
-- million queued, most of a 5,000-file claim's writes)
DROP INDEX files_batch;
CREATE INDEX files_batch ON files (batch_id) WHERE batch_id IS NOT NULL;
DROP INDEX files_retry;
CREATE INDEX files_retry ON files (not_before) WHERE status = 'queued' AND not_before > 0;

-- the summary counts apart the files a client asked for (a poll, a stage
-- request; files.requested), so the scheduler reads a tape someone waits
-- for before a tape only prefetch wants
ALTER TABLE queue_tapes ADD COLUMN asked INTEGER NOT NULL DEFAULT 0;
UPDATE queue_tapes SET asked = (SELECT count(*) FROM files f WHERE f.status = 'queued'
    AND f.requested AND f.library = queue_tapes.library
    AND coalesce(f.tape, '') = queue_tapes.tape AND f.owner = queue_tapes.owner);
DROP TRIGGER files_queue_insert;
DROP TRIGGER files_queue_delete;
DROP TRIGGER files_queue_update;
CREATE TRIGGER files_queue_insert AFTER INSERT ON files WHEN NEW.status = 'queued' BEGIN
    INSERT INTO queue_tapes (library, tape, owner, priority, files, bytes, newest, asked)
        VALUES (NEW.library, coalesce(NEW.tape, ''), NEW.owner, NEW.priority, 1,
            coalesce(NEW.size, 0), NEW.queued_at, NEW.requested != 0)
        ON CONFLICT (library, tape, owner) DO UPDATE SET files = files + 1,
            bytes = bytes + excluded.bytes, newest = max(newest, excluded.newest),
            priority = max(priority, excluded.priority), asked = asked + excluded.asked;
END;
CREATE TRIGGER files_queue_delete AFTER DELETE ON files WHEN OLD.status = 'queued' BEGIN
    UPDATE queue_tapes SET files = files - 1, bytes = bytes - coalesce(OLD.size, 0),
        asked = asked - (OLD.requested != 0)
        WHERE library = OLD.library AND tape = coalesce(OLD.tape, '') AND owner = OLD.owner;
    DELETE FROM queue_tapes WHERE library = OLD.library AND tape = coalesce(OLD.tape, '')
        AND owner = OLD.owner AND files <= 0;
END;
CREATE TRIGGER files_queue_update
    AFTER UPDATE OF status, library, tape, owner, size, priority, requested
    ON files WHEN OLD.status = 'queued' OR NEW.status = 'queued' BEGIN
    UPDATE queue_tapes SET files = files - 1, bytes = bytes - coalesce(OLD.size, 0),
        asked = asked - (OLD.requested != 0)
        WHERE OLD.status = 'queued' AND library = OLD.library
        AND tape = coalesce(OLD.tape, '') AND owner = OLD.owner;
    DELETE FROM queue_tapes WHERE OLD.status = 'queued' AND library = OLD.library
        AND tape = coalesce(OLD.tape, '') AND owner = OLD.owner AND files <= 0;
    INSERT INTO queue_tapes (library, tape, owner, priority, files, bytes, newest, asked)
        SELECT NEW.library, coalesce(NEW.tape, ''), NEW.owner, NEW.priority, 1,
            coalesce(NEW.size, 0), NEW.queued_at, NEW.requested != 0 WHERE NEW.status = 'queued'
        ON CONFLICT (library, tape, owner) DO UPDATE SET files = files + 1,
            bytes = bytes + excluded.bytes, newest = max(newest, excluded.newest),
            priority = max(priority, excluded.priority), asked = asked + excluded.asked;
END;

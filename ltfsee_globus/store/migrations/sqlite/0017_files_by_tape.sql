-- 17: files kept in tape order (WITHOUT ROWID, keyed by tape and path; a
-- tape's name holds its library). A claim rewrites each file it takes: in a rowid table a tape's
-- rows lay wherever they were first queued, a page per file at a million
-- queued (a 5,000-file claim wrote about 5,000 pages, 150-190 ms); kept in
-- tape order they share a few hundred pages. A lookup by path goes through
-- files_path. A key cannot be NULL, so a tape not known is '' here (a NULL
-- written becomes ''; the store's queries say coalesce(tape, '') for both
-- engines). The table is rebuilt (SQLite's way of changing a table's key),
-- so its indexes and triggers are made again, as they were. Library is not
-- in the key: files_tape (tape, status) would then end in (library, path),
-- and with ANALYZE's statistics SQLite skip-scanned it for a claim's walk
-- (status and library) and sorted the tape, 0.6 s at a million queued.
CREATE TABLE files_by_tape (
    path TEXT NOT NULL,
    library TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    batch_id INTEGER,
    prefetched INTEGER NOT NULL DEFAULT 0,
    requested INTEGER NOT NULL DEFAULT 0,
    size INTEGER,
    tape TEXT NOT NULL ON CONFLICT REPLACE DEFAULT '',
    queued_at REAL NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    owner TEXT NOT NULL DEFAULT '',
    priority INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tape, path)
) WITHOUT ROWID;
INSERT INTO files_by_tape (path, library, status, attempts, last_error, batch_id, prefetched,
        requested, size, tape, queued_at, not_before, created_at, updated_at, finished_at,
        owner, priority)
    SELECT path, library, status, attempts, last_error, batch_id, prefetched, requested, size,
        coalesce(tape, ''), queued_at, not_before, created_at, updated_at, finished_at, owner,
        priority
    FROM files ORDER BY coalesce(tape, ''), path;  -- in key order: appended, not inserted
DROP TABLE files;
ALTER TABLE files_by_tape RENAME TO files;

CREATE UNIQUE INDEX files_path ON files (path);
CREATE INDEX files_batch ON files (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX files_finished ON files (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX files_tape ON files (tape, status);
CREATE INDEX files_ready ON files (library, coalesce(tape, ''), queued_at) WHERE status = 'queued';
CREATE INDEX files_retry ON files (not_before) WHERE status = 'queued' AND not_before > 0;

-- the tallies (4), the totals (7, 9)
CREATE TRIGGER files_tally_insert AFTER INSERT ON files BEGIN
    INSERT INTO tallies (name, n) VALUES ('files:' || NEW.status, 1)
        ON CONFLICT (name) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER files_tally_delete AFTER DELETE ON files BEGIN
    UPDATE tallies SET n = n - 1 WHERE name = 'files:' || OLD.status;
END;
CREATE TRIGGER files_tally_update AFTER UPDATE OF status ON files
    WHEN OLD.status != NEW.status BEGIN
    UPDATE tallies SET n = n - 1 WHERE name = 'files:' || OLD.status;
    INSERT INTO tallies (name, n) VALUES ('files:' || NEW.status, 1)
        ON CONFLICT (name) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER files_total_insert AFTER INSERT ON files WHEN NEW.status = 'queued' BEGIN
    UPDATE tallies SET n = n + 1 WHERE name = 'total:queued';
END;
CREATE TRIGGER files_total_insert_failed AFTER INSERT ON files
    WHEN NEW.status = 'failed' BEGIN
    UPDATE tallies SET n = n + 1 WHERE name = 'total:failed';
END;
CREATE TRIGGER files_total_update AFTER UPDATE OF status ON files
    WHEN OLD.status != NEW.status BEGIN
    UPDATE tallies SET n = n + 1 WHERE name = 'total:queued'
        AND NEW.status = 'queued' AND OLD.status IN ('done', 'failed');
    UPDATE tallies SET n = n + 1 WHERE name = 'total:retried'
        AND NEW.status = 'queued' AND OLD.status = 'recalling';
    UPDATE tallies SET n = n + 1 WHERE name = 'total:recalled'
        AND NEW.status = 'done' AND OLD.status = 'recalling';
    UPDATE tallies SET n = n + coalesce(NEW.size, 0) WHERE name = 'total:recalled_bytes'
        AND NEW.status = 'done' AND OLD.status = 'recalling';
    UPDATE tallies SET n = n + 1 WHERE name = 'total:failed' AND NEW.status = 'failed';
END;

-- the queue summary (15, 16)
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

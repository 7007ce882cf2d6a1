-- 15: the queue as the stager reads it, a row per library, tape and requester
-- (queue_tapes, kept by triggers), so a pass of the stager reads a row per
-- tape, not a row per file, and a claim reads only the files it takes
-- (files_ready). Who queued each file (owner: a Globus task, a WLCG request,
-- a key) and its priority (a stage request's from its key); what a batch
-- holds (owners, bytes), so the scheduler knows who uses the drives.
ALTER TABLE files ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE files ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN owners TEXT NOT NULL DEFAULT '';
ALTER TABLE batches ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stage_requests ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;

CREATE TABLE queue_tapes (
    library TEXT NOT NULL,
    tape TEXT NOT NULL,
    owner TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    newest REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (library, tape, owner)
);
INSERT INTO queue_tapes (library, tape, owner, priority, files, bytes, newest)
    SELECT library, coalesce(tape, ''), owner, max(priority), count(*),
        sum(coalesce(size, 0)), max(queued_at)
    FROM files WHERE status = 'queued' GROUP BY 1, 2, 3;

CREATE TRIGGER files_queue_insert AFTER INSERT ON files WHEN NEW.status = 'queued' BEGIN
    INSERT INTO queue_tapes (library, tape, owner, priority, files, bytes, newest)
        VALUES (NEW.library, coalesce(NEW.tape, ''), NEW.owner, NEW.priority, 1,
            coalesce(NEW.size, 0), NEW.queued_at)
        ON CONFLICT (library, tape, owner) DO UPDATE SET files = files + 1,
            bytes = bytes + excluded.bytes, newest = max(newest, excluded.newest),
            priority = max(priority, excluded.priority);
END;
CREATE TRIGGER files_queue_delete AFTER DELETE ON files WHEN OLD.status = 'queued' BEGIN
    UPDATE queue_tapes SET files = files - 1, bytes = bytes - coalesce(OLD.size, 0)
        WHERE library = OLD.library AND tape = coalesce(OLD.tape, '') AND owner = OLD.owner;
    DELETE FROM queue_tapes WHERE library = OLD.library AND tape = coalesce(OLD.tape, '')
        AND owner = OLD.owner AND files <= 0;
END;
CREATE TRIGGER files_queue_update AFTER UPDATE OF status, library, tape, owner, size, priority
    ON files WHEN OLD.status = 'queued' OR NEW.status = 'queued' BEGIN
    UPDATE queue_tapes SET files = files - 1, bytes = bytes - coalesce(OLD.size, 0)
        WHERE OLD.status = 'queued' AND library = OLD.library
        AND tape = coalesce(OLD.tape, '') AND owner = OLD.owner;
    DELETE FROM queue_tapes WHERE OLD.status = 'queued' AND library = OLD.library
        AND tape = coalesce(OLD.tape, '') AND owner = OLD.owner AND files <= 0;
    INSERT INTO queue_tapes (library, tape, owner, priority, files, bytes, newest)
        SELECT NEW.library, coalesce(NEW.tape, ''), NEW.owner, NEW.priority, 1,
            coalesce(NEW.size, 0), NEW.queued_at WHERE NEW.status = 'queued'
        ON CONFLICT (library, tape, owner) DO UPDATE SET files = files + 1,
            bytes = bytes + excluded.bytes, newest = max(newest, excluded.newest),
            priority = max(priority, excluded.priority);
END;

-- a claim walks one tape's ready files oldest first; a retry's time is found by a seek
DROP INDEX files_queue;
CREATE INDEX files_ready ON files (library, coalesce(tape, ''), queued_at) WHERE status = 'queued';
CREATE INDEX files_retry ON files (not_before) WHERE status = 'queued';

-- the drives as the stager last read them from `eeadm drive list`
CREATE TABLE tape_drives (
    id TEXT NOT NULL,
    library TEXT NOT NULL,
    status TEXT NOT NULL,
    state TEXT NOT NULL,
    role TEXT NOT NULL,
    tape TEXT NOT NULL,
    recall INTEGER NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (library, id)
);

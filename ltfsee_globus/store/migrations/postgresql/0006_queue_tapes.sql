-- 6: the queue as the stager reads it, a row per library, tape and requester
-- (queue_tapes, kept by a trigger), so a pass of the stager reads a row per
-- tape, not a row per file, and a claim reads only the files it takes
-- (files_ready). Who queued each file (owner: a Globus task, a WLCG request,
-- a key) and its priority (a stage request's from its key); what a batch
-- holds (owners, bytes), so the scheduler knows who uses the drives.
ALTER TABLE files ADD COLUMN owner text NOT NULL DEFAULT '';
ALTER TABLE files ADD COLUMN priority integer NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN owners text NOT NULL DEFAULT '';
ALTER TABLE batches ADD COLUMN bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE stage_requests ADD COLUMN priority integer NOT NULL DEFAULT 0;

CREATE TABLE queue_tapes (
    library text NOT NULL,
    tape text NOT NULL,
    owner text NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    files bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    newest double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (library, tape, owner)
);
INSERT INTO queue_tapes (library, tape, owner, priority, files, bytes, newest)
    SELECT library, coalesce(tape, ''), owner, max(priority), count(*),
        sum(coalesce(size, 0)), max(queued_at)
    FROM files WHERE status = 'queued' GROUP BY 1, 2, 3;

CREATE FUNCTION files_queue_tapes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status = 'queued' THEN
        UPDATE queue_tapes SET files = files - 1, bytes = bytes - coalesce(OLD.size, 0)
            WHERE library = OLD.library AND tape = coalesce(OLD.tape, '') AND owner = OLD.owner;
        DELETE FROM queue_tapes WHERE library = OLD.library AND tape = coalesce(OLD.tape, '')
            AND owner = OLD.owner AND files <= 0;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status = 'queued' THEN
        INSERT INTO queue_tapes (library, tape, owner, priority, files, bytes, newest)
            VALUES (NEW.library, coalesce(NEW.tape, ''), NEW.owner, NEW.priority, 1,
                coalesce(NEW.size, 0), NEW.queued_at)
            ON CONFLICT (library, tape, owner) DO UPDATE SET files = queue_tapes.files + 1,
                bytes = queue_tapes.bytes + excluded.bytes,
                newest = greatest(queue_tapes.newest, excluded.newest),
                priority = greatest(queue_tapes.priority, excluded.priority);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER files_queue_tapes AFTER INSERT OR DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION files_queue_tapes();
CREATE TRIGGER files_queue_tapes_update AFTER UPDATE OF status, library, tape, owner, size, priority
    ON files FOR EACH ROW WHEN (OLD.status = 'queued' OR NEW.status = 'queued')
    EXECUTE FUNCTION files_queue_tapes();

-- a claim walks one tape's ready files oldest first; a retry's time is found by a seek
DROP INDEX files_queue;
CREATE INDEX files_ready ON files (library, coalesce(tape, ''), queued_at) WHERE status = 'queued';
CREATE INDEX files_retry ON files (not_before) WHERE status = 'queued';

-- the drives as the stager last read them from `eeadm drive list`
CREATE TABLE tape_drives (
    id text NOT NULL,
    library text NOT NULL,
    status text NOT NULL,
    state text NOT NULL,
    role text NOT NULL,
    tape text NOT NULL,
    recall boolean NOT NULL,
    seen_at double precision NOT NULL,
    PRIMARY KEY (library, id)
);

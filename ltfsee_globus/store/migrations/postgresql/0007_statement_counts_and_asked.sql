-- 7: the tallies and the queue summary kept once a statement, not once a row
-- (and the summary counts the files a client asked for).
-- A claim moves thousands of files in one UPDATE; four plpgsql row triggers
-- per file made a claim of 5,000 files at a million queued take 1.4 s. One
-- statement trigger per operation now sums what the statement changed (its
-- transition tables: the rows before and after) and writes each tally and
-- each summary row once.
DROP TRIGGER files_tally ON files;
DROP TRIGGER files_tally_status ON files;
DROP TRIGGER files_queue_tapes ON files;
DROP TRIGGER files_queue_tapes_update ON files;
DROP FUNCTION files_tally();
DROP FUNCTION files_queue_tapes();

-- the summary counts apart the files a client asked for (a poll, a stage
-- request; files.requested), so the scheduler reads a tape someone waits
-- for before a tape only prefetch wants
ALTER TABLE queue_tapes ADD COLUMN asked bigint NOT NULL DEFAULT 0;
UPDATE queue_tapes AS q SET asked = (SELECT count(*) FROM files f WHERE f.status = 'queued'
    AND f.requested AND f.library = q.library AND coalesce(f.tape, '') = q.tape
    AND f.owner = q.owner);

CREATE FUNCTION files_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tallies (name, shard, n)
            SELECT name, pg_backend_pid() % 64, sum(d) FROM (
                SELECT 'files:' || status, 1 FROM new_rows
                UNION ALL SELECT 'total:queued', 1 FROM new_rows WHERE status = 'queued'
                UNION ALL SELECT 'total:failed', 1 FROM new_rows WHERE status = 'failed'
            ) AS t (name, d) GROUP BY name
            ON CONFLICT (name, shard) DO UPDATE SET n = tallies.n + excluded.n;
        INSERT INTO queue_tapes AS q (library, tape, owner, priority, files, bytes, newest,
                asked)
            SELECT library, coalesce(tape, ''), owner, max(priority), count(*),
                sum(coalesce(size, 0)), max(queued_at), count(*) FILTER (WHERE requested)
            FROM new_rows WHERE status = 'queued' GROUP BY 1, 2, 3
            ON CONFLICT (library, tape, owner) DO UPDATE SET files = q.files + excluded.files,
                bytes = q.bytes + excluded.bytes, newest = greatest(q.newest, excluded.newest),
                priority = greatest(q.priority, excluded.priority),
                asked = q.asked + excluded.asked;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO tallies (name, shard, n)
            SELECT 'files:' || status, pg_backend_pid() % 64, -count(*) FROM old_rows GROUP BY 1
            ON CONFLICT (name, shard) DO UPDATE SET n = tallies.n + excluded.n;
        UPDATE queue_tapes AS q SET files = q.files - g.files, bytes = q.bytes - g.bytes,
                asked = q.asked - g.asked
            FROM (SELECT library, coalesce(tape, '') AS tape, owner, count(*) AS files,
                    sum(coalesce(size, 0)) AS bytes, count(*) FILTER (WHERE requested) AS asked
                FROM old_rows WHERE status = 'queued' GROUP BY 1, 2, 3) AS g
            WHERE q.library = g.library AND q.tape = g.tape AND q.owner = g.owner;
        DELETE FROM queue_tapes AS q USING (SELECT DISTINCT library, coalesce(tape, '') AS tape,
                owner FROM old_rows WHERE status = 'queued') AS g
            WHERE q.library = g.library AND q.tape = g.tape AND q.owner = g.owner
            AND q.files <= 0;
    ELSE
        INSERT INTO tallies (name, shard, n)
            SELECT name, pg_backend_pid() % 64, sum(d) FROM (
                SELECT 'files:' || o.status, -1 FROM old_rows o JOIN new_rows n USING (path)
                    WHERE o.status <> n.status
                UNION ALL SELECT 'files:' || n.status, 1 FROM old_rows o JOIN new_rows n
                    USING (path) WHERE o.status <> n.status
                UNION ALL SELECT CASE
                        WHEN n.status = 'queued' AND o.status IN ('done', 'failed')
                            THEN 'total:queued'
                        WHEN n.status = 'queued' AND o.status = 'recalling' THEN 'total:retried'
                        WHEN n.status = 'done' AND o.status = 'recalling' THEN 'total:recalled'
                        WHEN n.status = 'failed' THEN 'total:failed'
                    END, 1
                    FROM old_rows o JOIN new_rows n USING (path) WHERE o.status <> n.status
                UNION ALL SELECT 'total:recalled_bytes', coalesce(n.size, 0)
                    FROM old_rows o JOIN new_rows n USING (path)
                    WHERE n.status = 'done' AND o.status = 'recalling'
            ) AS t (name, d) WHERE name IS NOT NULL GROUP BY name
            ON CONFLICT (name, shard) DO UPDATE SET n = tallies.n + excluded.n;
        -- a queued row whose summary key or counts changed leaves its old
        -- group and joins its new one (for most statements: no row does)
        INSERT INTO queue_tapes AS q (library, tape, owner, priority, files, bytes, newest,
                asked)
            SELECT library, tape, owner, max(priority), sum(files), sum(bytes), max(newest),
                sum(asked)
            FROM (
                SELECT o.library, coalesce(o.tape, ''), o.owner, 0, -1, -coalesce(o.size, 0),
                    0::double precision, -o.requested::integer
                    FROM old_rows o JOIN new_rows n USING (path)
                    WHERE o.status = 'queued' AND (n.status, n.library, n.tape, n.owner, n.size,
                        n.priority, n.queued_at, n.requested) IS DISTINCT FROM (o.status,
                        o.library, o.tape, o.owner, o.size, o.priority, o.queued_at, o.requested)
                UNION ALL SELECT n.library, coalesce(n.tape, ''), n.owner, n.priority, 1,
                    coalesce(n.size, 0), n.queued_at, n.requested::integer
                    FROM old_rows o JOIN new_rows n USING (path)
                    WHERE n.status = 'queued' AND (n.status, n.library, n.tape, n.owner, n.size,
                        n.priority, n.queued_at, n.requested) IS DISTINCT FROM (o.status,
                        o.library, o.tape, o.owner, o.size, o.priority, o.queued_at, o.requested)
            ) AS m (library, tape, owner, priority, files, bytes, newest, asked)
            GROUP BY 1, 2, 3
            ON CONFLICT (library, tape, owner) DO UPDATE SET files = q.files + excluded.files,
                bytes = q.bytes + excluded.bytes, newest = greatest(q.newest, excluded.newest),
                priority = greatest(q.priority, excluded.priority),
                asked = q.asked + excluded.asked;
        -- only a group that lost a file can be empty now
        DELETE FROM queue_tapes AS q USING (SELECT DISTINCT o.library,
                coalesce(o.tape, '') AS tape, o.owner FROM old_rows o WHERE o.status = 'queued')
                AS g
            WHERE q.library = g.library AND q.tape = g.tape AND q.owner = g.owner
            AND q.files <= 0;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER files_counts_insert AFTER INSERT ON files
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION files_counts();
CREATE TRIGGER files_counts_delete AFTER DELETE ON files
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION files_counts();
CREATE TRIGGER files_counts_update AFTER UPDATE ON files
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION files_counts();

-- a claim changes batch_id and status of each file it takes: the files not
-- in a batch, and those not waiting for a retry, leave these two indexes,
-- so a claim does not touch a page of them for each file
DROP INDEX files_batch;
CREATE INDEX files_batch ON files (batch_id) WHERE batch_id IS NOT NULL;
DROP INDEX files_retry;
CREATE INDEX files_retry ON files (not_before) WHERE status = 'queued' AND not_before > 0;

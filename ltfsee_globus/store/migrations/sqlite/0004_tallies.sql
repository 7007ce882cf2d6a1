-- 4: tallies kept by triggers (a scrape costs the same at 10 million records as at 10), indexes for retention, and prefetch totals that survive pruning
CREATE TABLE tallies (name TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0);
INSERT INTO tallies (name, n) SELECT 'files:' || status, count(*) FROM files GROUP BY status;
INSERT INTO tallies (name, n)
    SELECT 'batches:' || status, count(*) FROM batches GROUP BY status;
INSERT INTO tallies (name, n) SELECT 'prefetch:files', coalesce(sum(files), 0)
    FROM prefetch_tasks;
INSERT INTO tallies (name, n) SELECT 'prefetch:bytes', coalesce(sum(bytes), 0)
    FROM prefetch_tasks;
INSERT INTO tallies (name, n) SELECT 'prefetch:asked_files', coalesce(sum(asked_files), 0)
    FROM prefetch_tasks;
INSERT INTO tallies (name, n) SELECT 'prefetch:asked_bytes', coalesce(sum(asked_bytes), 0)
    FROM prefetch_tasks;
INSERT INTO tallies (name, n)
    SELECT 'prefetch:dropped_files', coalesce(sum(dropped_files), 0) FROM prefetch_tasks;
INSERT INTO tallies (name, n)
    SELECT 'prefetch:dropped_bytes', coalesce(sum(dropped_bytes), 0) FROM prefetch_tasks;
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
CREATE TRIGGER batches_tally_insert AFTER INSERT ON batches BEGIN
    INSERT INTO tallies (name, n) VALUES ('batches:' || NEW.status, 1)
        ON CONFLICT (name) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER batches_tally_delete AFTER DELETE ON batches BEGIN
    UPDATE tallies SET n = n - 1 WHERE name = 'batches:' || OLD.status;
END;
CREATE TRIGGER batches_tally_update AFTER UPDATE OF status ON batches
    WHEN OLD.status != NEW.status BEGIN
    UPDATE tallies SET n = n - 1 WHERE name = 'batches:' || OLD.status;
    INSERT INTO tallies (name, n) VALUES ('batches:' || NEW.status, 1)
        ON CONFLICT (name) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER prefetch_tally_insert AFTER INSERT ON prefetch_tasks BEGIN
    UPDATE tallies SET n = n + CASE name
        WHEN 'prefetch:files' THEN NEW.files WHEN 'prefetch:bytes' THEN NEW.bytes
        WHEN 'prefetch:asked_files' THEN NEW.asked_files
        WHEN 'prefetch:asked_bytes' THEN NEW.asked_bytes
        WHEN 'prefetch:dropped_files' THEN NEW.dropped_files
        WHEN 'prefetch:dropped_bytes' THEN NEW.dropped_bytes END
    WHERE name LIKE 'prefetch:%';
END;
CREATE TRIGGER prefetch_tally_update AFTER UPDATE ON prefetch_tasks BEGIN
    UPDATE tallies SET n = n + CASE name
        WHEN 'prefetch:files' THEN NEW.files - OLD.files
        WHEN 'prefetch:bytes' THEN NEW.bytes - OLD.bytes
        WHEN 'prefetch:asked_files' THEN NEW.asked_files - OLD.asked_files
        WHEN 'prefetch:asked_bytes' THEN NEW.asked_bytes - OLD.asked_bytes
        WHEN 'prefetch:dropped_files' THEN NEW.dropped_files - OLD.dropped_files
        WHEN 'prefetch:dropped_bytes' THEN NEW.dropped_bytes - OLD.dropped_bytes END
    WHERE name LIKE 'prefetch:%';
END;
CREATE INDEX files_finished ON files (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX batches_ended ON batches (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX stage_requests_created ON stage_requests (created_at);
CREATE INDEX prefetch_tasks_updated ON prefetch_tasks (updated_at);


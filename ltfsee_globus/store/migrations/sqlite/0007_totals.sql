-- 7: monotonic totals for Prometheus counters (what happened, not what is), kept by triggers so every process's work counts once and pruning keeps them
INSERT INTO tallies (name, n) VALUES ('total:queued', 0), ('total:retried', 0),
    ('total:recalled', 0), ('total:recalled_bytes', 0), ('total:failed', 0),
    ('total:batches_succeeded', 0), ('total:batches_partial', 0),
    ('total:batches_failed', 0);
CREATE TRIGGER files_total_insert AFTER INSERT ON files WHEN NEW.status = 'queued' BEGIN
    UPDATE tallies SET n = n + 1 WHERE name = 'total:queued';
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
CREATE TRIGGER batches_total_outcome AFTER UPDATE OF outcome ON batches
    WHEN OLD.outcome IS NULL AND NEW.outcome IS NOT NULL BEGIN
    UPDATE tallies SET n = n + 1 WHERE name = 'total:batches_' || NEW.outcome;
END;


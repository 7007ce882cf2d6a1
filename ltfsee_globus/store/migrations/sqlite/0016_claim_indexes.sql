-- 16: a claim changes batch_id and status of each file it takes: the files
-- not in a batch, and those not waiting for a retry, leave these two
-- indexes, so a claim does not touch a page of them for each file (at a
-- million queued, most of a 5,000-file claim's writes)
DROP INDEX files_batch;
CREATE INDEX files_batch ON files (batch_id) WHERE batch_id IS NOT NULL;
DROP INDEX files_retry;
CREATE INDEX files_retry ON files (not_before) WHERE status = 'queued' AND not_before > 0;

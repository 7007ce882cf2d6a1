-- 10: a recall of one tape (TAPE_DRIVES) names it, so a restarted stager knows which tapes are busy
ALTER TABLE batches ADD COLUMN tape TEXT;

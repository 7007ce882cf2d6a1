-- 12: EE task IDs are text (1005:1111:4444, tmp15nwx2vl:1000:1002), not integers
ALTER TABLE batches RENAME COLUMN eeadm_task_id TO eeadm_task_id_int;
ALTER TABLE batches ADD COLUMN eeadm_task_id TEXT;
UPDATE batches SET eeadm_task_id = CAST(eeadm_task_id_int AS TEXT) WHERE eeadm_task_id_int IS NOT NULL;
ALTER TABLE batches DROP COLUMN eeadm_task_id_int;

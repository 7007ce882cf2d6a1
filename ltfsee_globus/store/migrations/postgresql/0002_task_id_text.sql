-- 2: EE task IDs are text (1005:1111:4444, tmp15nwx2vl:1000:1002), not integers
ALTER TABLE batches ALTER COLUMN eeadm_task_id TYPE text USING eeadm_task_id::text;

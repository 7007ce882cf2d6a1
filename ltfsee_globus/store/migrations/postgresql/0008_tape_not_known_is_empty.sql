-- 8: a tape not known is '' in files, as a library not known is, and as the
-- queue summary has it (SQLite keeps its files in tape order, keyed by
-- library, tape and path, and a key cannot be NULL); a claim's walk of a
-- tape's ready files uses the column itself
UPDATE files SET tape = '' WHERE tape IS NULL;
ALTER TABLE files ALTER COLUMN tape SET DEFAULT '', ALTER COLUMN tape SET NOT NULL;
DROP INDEX files_ready;
CREATE INDEX files_ready ON files (library, tape, queued_at) WHERE status = 'queued';

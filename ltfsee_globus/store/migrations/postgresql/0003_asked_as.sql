-- 3: a WLCG request file keeps the path as the client wrote it (asked_as), answered back as such; path is the normalised one the service works on
ALTER TABLE request_files ADD COLUMN asked_as text;
UPDATE request_files SET asked_as = path;
ALTER TABLE request_files ALTER COLUMN asked_as SET NOT NULL;
ALTER TABLE request_files DROP CONSTRAINT request_files_pkey;
ALTER TABLE request_files ADD PRIMARY KEY (request_id, asked_as);

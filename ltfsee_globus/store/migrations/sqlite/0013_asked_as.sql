-- 13: a WLCG request file keeps the path as the client wrote it (asked_as), answered back as such; path is the normalised one the service works on, so "/a//b" and "/a/b" are two entries of one file
CREATE TABLE request_files_new (
    request_id TEXT NOT NULL,
    asked_as TEXT NOT NULL,
    path TEXT NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    checked INTEGER NOT NULL DEFAULT 0,
    released INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    started_at REAL,
    finished_at REAL,
    PRIMARY KEY (request_id, asked_as)
);
INSERT INTO request_files_new (request_id, asked_as, path, position, state, checked, released,
    error, started_at, finished_at)
    SELECT request_id, path, path, position, state, checked, released, error, started_at,
    finished_at FROM request_files;
DROP TABLE request_files;
ALTER TABLE request_files_new RENAME TO request_files;
CREATE INDEX request_files_path ON request_files (path);
CREATE INDEX request_files_unchecked ON request_files (checked);

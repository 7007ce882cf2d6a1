-- 2: WLCG Tape REST stage requests
CREATE TABLE stage_requests (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    library TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL
);
CREATE TABLE request_files (
    request_id TEXT NOT NULL,
    path TEXT NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    checked INTEGER NOT NULL DEFAULT 0,
    released INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    started_at REAL,
    finished_at REAL,
    PRIMARY KEY (request_id, path)
);
CREATE INDEX request_files_path ON request_files (path);
CREATE INDEX request_files_unchecked ON request_files (checked);


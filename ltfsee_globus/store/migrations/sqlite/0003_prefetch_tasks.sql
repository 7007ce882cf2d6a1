-- 3: prefetch precision per task (replaces the budget and the scanned directories)
CREATE TABLE prefetch_tasks (
    taskid TEXT PRIMARY KEY,
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    asked_files INTEGER NOT NULL DEFAULT 0,
    asked_bytes INTEGER NOT NULL DEFAULT 0,
    dropped_files INTEGER NOT NULL DEFAULT 0,
    dropped_bytes INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL DEFAULT 0
);
INSERT INTO prefetch_tasks (taskid, files, bytes) SELECT taskid, files, bytes
    FROM prefetch_budget;
DROP TABLE prefetch_budget;
DROP TABLE prefetch_scanned;
CREATE INDEX requesters_path ON requesters (path, kind);
CREATE TABLE lookups (
    pid INTEGER PRIMARY KEY,
    running INTEGER NOT NULL,
    since REAL NOT NULL
);


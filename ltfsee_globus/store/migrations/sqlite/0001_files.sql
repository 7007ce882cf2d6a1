-- 1: files, requesters, batches, prefetch bookkeeping
CREATE TABLE files (
    path TEXT PRIMARY KEY,
    library TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    batch_id INTEGER,
    prefetched INTEGER NOT NULL DEFAULT 0,
    requested INTEGER NOT NULL DEFAULT 0,
    size INTEGER,
    tape TEXT,
    queued_at REAL NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX files_queue ON files (status, library, not_before);
CREATE INDEX files_batch ON files (batch_id);
CREATE TABLE requesters (
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (path, kind, ref)
);
CREATE INDEX requesters_ref ON requesters (kind, ref);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    library TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    n_files INTEGER NOT NULL,
    pid INTEGER,
    eeadm_task_id INTEGER,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT,
    detail TEXT
);
CREATE INDEX batches_status ON batches (status);
CREATE TABLE prefetch_triggers (
    id INTEGER PRIMARY KEY,
    taskid TEXT NOT NULL,
    path TEXT NOT NULL,
    library TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE TABLE prefetch_budget (
    taskid TEXT PRIMARY KEY,
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE prefetch_scanned (
    taskid TEXT NOT NULL,
    dir TEXT NOT NULL,
    PRIMARY KEY (taskid, dir)
);


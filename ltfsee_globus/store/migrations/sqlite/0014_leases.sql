-- 14: the stager lease (one leader, an epoch per take-over), the processes
-- with a stager thread (members), and which node and epoch started each batch
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT,
    node TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL DEFAULT 0,
    taken_at REAL
);
INSERT INTO leases (name) VALUES ('stager');

CREATE TABLE members (
    owner TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    role TEXT NOT NULL,
    version TEXT NOT NULL,
    epoch INTEGER,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);

ALTER TABLE batches ADD COLUMN node TEXT;
ALTER TABLE batches ADD COLUMN epoch INTEGER;

-- 11: a lookup counter belongs to a process named host:pid, not a bare pid (hosts can share one database); the counters are transient
DROP TABLE lookups;
CREATE TABLE lookups (
    owner TEXT PRIMARY KEY,
    running INTEGER NOT NULL,
    since REAL NOT NULL
);
